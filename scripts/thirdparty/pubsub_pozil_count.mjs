// Counts events with pozil's salesforce-pubsub-api-client, unmodified: subscribes from EARLIEST
// and, like `sfcdc tail --format none`, decodes every event (the client always does) and counts
// it, printing one summary line at the end. The reference for the throughput comparison of
// scripts/thirdparty/compare_node.sh.
// Usage: node pubsub_pozil_count.mjs <grpc host:port> <login url> <topic> <count>
import PubSubApiClient from 'salesforce-pubsub-api-client';

const [, , endpoint, loginUrl, topic, count] = process.argv;
const quiet = { debug() {}, info() {}, warn: (...a) => console.error(...a), error: (...a) => console.error(...a) };
const client = new PubSubApiClient({
  authType: 'oauth-client-credentials', loginUrl, clientId: 'sfcdc-demo', clientSecret: 'sfcdc-demo-secret',
  pubSubEndpoint: endpoint, rejectUnauthorizedSsl: false,
}, quiet);
await client.connect();
const want = parseInt(count, 10);
let n = 0;
const started = process.hrtime.bigint();
client.subscribeFromEarliestEvent(topic, (sub, type, data) => {
  if (type === 'event') {
    if (data.payload) n += 1;
    if (n >= want) {
      const s = Number(process.hrtime.bigint() - started) / 1e9;
      console.log(`${n} events in ${s.toFixed(2)} s: ${Math.round(n / s)} events/s`);
      client.close();
      process.exit(0);
    }
  } else if (type === 'error') {
    console.error('subscription error', data);
    process.exit(1);
  }
}, null); // no count: the client requests 100 at a time, again after each 100, until closed
