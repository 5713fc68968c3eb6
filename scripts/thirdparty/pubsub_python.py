# Modeled on forcedotcom/pub-sub-api python/InventoryAppExample: OAuth password grant, userinfo
# for the org id, grpc.secure_channel with a root certificate, avro.io.BinaryDecoder, bitmaps decoded
# the way its ChangeEventHeaderUtility does. Usage: pubsub_python.py HOST:PORT LOGIN_URL CA TOPIC N
import io, json, sys, threading, urllib.request, urllib.parse, ssl
import grpc, avro.schema, avro.io
import pubsub_api_pb2 as pb2, pubsub_api_pb2_grpc as pb2_grpc

grpc_host, login, ca, topic, count = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
ctx = ssl.create_default_context(cafile=ca)
data = urllib.parse.urlencode({"grant_type": "password", "client_id": "sfcdc-demo", "client_secret": "sfcdc-demo-secret", "username": "demo@sfcdc.test", "password": "sfcdc-demo-password"}).encode()
tok = json.load(urllib.request.urlopen(urllib.request.Request(login + "/services/oauth2/token", data=data), context=ctx))
req = urllib.request.Request(login + "/services/oauth2/userinfo", headers={"Authorization": "Bearer " + tok["access_token"]})
org = json.load(urllib.request.urlopen(req, context=ctx))["organization_id"]
creds = grpc.ssl_channel_credentials(open(ca, "rb").read())
channel = grpc.secure_channel(grpc_host, creds)
stub = pb2_grpc.PubSubStub(channel)
md = (("accesstoken", tok["access_token"]), ("instanceurl", tok["instance_url"]), ("tenantid", org))
schemas = {}
def get_schema(sid):
    if sid not in schemas:
        schemas[sid] = avro.schema.parse(stub.GetSchema(pb2.SchemaRequest(schema_id=sid), metadata=md).schema_json)
    return schemas[sid]
def process_bitmap(schema, bitmap_fields):  # ChangeEventHeaderUtility.process_bitmap, condensed
    fields = []
    if bitmap_fields and bitmap_fields[0].startswith("0x"):
        b = bin(int(bitmap_fields[0], 16))[2:][::-1]
        fields += [schema.fields[i].name for i, bit in enumerate(b) if bit == "1" and i < len(schema.fields)]
    for f in bitmap_fields[1:] if bitmap_fields and bitmap_fields[0].startswith("0x") else bitmap_fields:
        if "-" in f:
            p, h = f.split("-")
            parent = schema.fields[int(p)]
            child = [t for t in parent.type.schemas if t.type == "record"][0]
            b = bin(int(h, 16))[2:][::-1]
            fields += [parent.name + "." + child.fields[i].name for i, bit in enumerate(b) if bit == "1" and i < len(child.fields)]
    return fields
sem = threading.Semaphore(1)
def fetch_reqs():
    yield pb2.FetchRequest(topic_name=topic, replay_preset=pb2.ReplayPreset.EARLIEST, num_requested=count)
    sem.acquire(); sem.acquire()
n = 0
for resp in stub.Subscribe(fetch_reqs(), metadata=md):
    assert len(resp.latest_replay_id) >= 8 and resp.rpc_id
    for e in resp.events:
        sch = get_schema(e.event.schema_id)
        dec = avro.io.DatumReader(sch).read(avro.io.BinaryDecoder(io.BytesIO(e.event.payload)))
        h = dec.get("ChangeEventHeader")
        out = {"replay": int.from_bytes(e.replay_id[:8], "big")}
        if h:
            out.update(type=h["changeType"], changed=process_bitmap(sch, h["changedFields"]), nulled=process_bitmap(sch, h["nulledFields"]))
        else:
            out.update(payload=dec)
        print(json.dumps(out))
        n += 1
    if n >= count:
        sem.release(); break
