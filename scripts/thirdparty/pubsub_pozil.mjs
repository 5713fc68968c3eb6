// Subscribes to the emulator with pozil's salesforce-pubsub-api-client, unmodified, and prints
// one JSON line per event with the field names its own bitmap decoder derives.
// Usage: node pubsub_pozil.mjs <grpc host:port> <login url> <topic> <count> <auth>
//   auth: client-credentials | username-password
// Trust: NODE_EXTRA_CA_CERTS=<emulator CA> for the OAuth/SOAP calls; the client pins its own
// bundled roots for gRPC, so the only switch it offers is rejectUnauthorizedSsl=false.
import PubSubApiClient from 'salesforce-pubsub-api-client';

const [, , endpoint, loginUrl, topic, count, auth] = process.argv;
const quiet = { debug() {}, info() {}, warn: (...a) => console.error(...a), error: (...a) => console.error(...a) };
const config = auth === 'username-password'
  ? { authType: 'username-password', loginUrl, username: 'demo@sfcdc.test', password: 'sfcdc-demo-password' }
  : { authType: 'oauth-client-credentials', loginUrl, clientId: 'sfcdc-demo', clientSecret: 'sfcdc-demo-secret' };
const client = new PubSubApiClient({ ...config, pubSubEndpoint: endpoint, rejectUnauthorizedSsl: false }, quiet);
await client.connect();
const want = parseInt(count, 10);
let n = 0;
const big = (k, v) => (typeof v === 'bigint' ? v.toString() : v);
client.subscribeFromEarliestEvent(topic, (sub, type, data) => {
  if (type === 'event') {
    const h = data.payload.ChangeEventHeader;
    console.log(JSON.stringify({
      replayId: data.replayId, schemaId: data.schemaId,
      changeType: h?.changeType, recordIds: h?.recordIds,
      changedFields: h?.changedFields, nulledFields: h?.nulledFields, payload: h ? undefined : data.payload,
    }, big));
    if (++n >= want) { client.close(); process.exit(0); }
  } else if (type === 'error') {
    console.error('subscription error', data);
    process.exit(1);
  }
}, want);
