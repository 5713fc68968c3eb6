# simple-salesforce (PyPI), unmodified, against the emulator's REST API: OAuth client credentials
# for a token, then Salesforce(instance_url=..., session_id=...) as its docs show, with the
# emulator's CA trusted. Usage: rest_simple_salesforce.py INSTANCE_URL CA
import sys
import requests
from simple_salesforce import Salesforce, SalesforceMalformedRequest

instance, ca = sys.argv[1], sys.argv[2]
http = requests.Session()
http.verify = ca
http.trust_env = False  # or REQUESTS_CA_BUNDLE, where set, would replace the emulator's CA
token = http.post(instance + "/services/oauth2/token", data={
    "grant_type": "client_credentials", "client_id": "sfcdc-demo", "client_secret": "sfcdc-demo-secret",
})
token.raise_for_status()
token = token.json()
sf = Salesforce(instance_url=token["instance_url"], session_id=token["access_token"], version="62.0", session=http)

# query_all pages through nextRecordsUrl (2,000 records a page, as Salesforce pages).
first = sf.query("SELECT Id, Status FROM Order")
assert not first["done"] and len(first["records"]) == 2000, (first["done"], len(first["records"]))
everything = sf.query_all("SELECT Id, Status FROM Order")
orders = everything["records"]
assert len(orders) == everything["totalSize"] > 2000, len(orders)
assert len({o["Id"] for o in orders}) == len(orders)
assert sf.query("SELECT count() FROM Order")["totalSize"] == len(orders)
print(f"query_all: {len(orders)} orders over {(len(orders) + 1999) // 2000} pages")

# Retrieve, update, retrieve.
order_id = next(o["Id"] for o in orders if o["Status"] == "Draft")
order = sf.Order.get(order_id)
assert order["Id"] == order_id and order["IsDeleted"] is False and order["attributes"]["type"] == "Order"
assert sf.Order.update(order_id, {"Description": "set by simple-salesforce", "BillingCity": "Bath"}) == 204
order = sf.Order.get(order_id)
assert (order["Description"], order["BillingAddress"]["city"]) == ("set by simple-salesforce", "Bath"), order
print(f"get/update: {order_id} updated")

# A bad field is Salesforce's INVALID_FIELD.
try:
    sf.Order.update(order_id, {"Nope__c": 1})
    raise AssertionError("an unknown field was accepted")
except SalesforceMalformedRequest as e:
    assert e.content[0]["errorCode"] == "INVALID_FIELD", e.content
    print(f"bad field: {e.content[0]['errorCode']}: {e.content[0]['message']}")

# Describe: global, the object's basic information and its fields.
names = [o["name"] for o in sf.describe()["sobjects"]]
assert {"Account", "Order", "OrderItem"} <= set(names), names
assert sf.Order.metadata()["objectDescribe"]["keyPrefix"] == "801"
fields = {f["name"]: f for f in sf.Order.describe()["fields"]}
assert fields["Status"]["type"] == "picklist" and "Approved" in [v["value"] for v in fields["Status"]["picklistValues"]]
assert fields["AccountId"]["referenceTo"] == ["Account"] and fields["IsDeleted"]["type"] == "boolean"
print(f"describe: {len(names)} objects, Order has {len(fields)} fields")

# Create (POST …/sobjects/Order/, with its trailing slash) and a collection update.
account = sf.query("SELECT Id FROM Account LIMIT 1")["records"][0]["Id"]
created = sf.Order.create({"AccountId": account, "EffectiveDate": "2024-06-01", "Status": "Draft"})
assert created["success"], created
results = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": True, "records": [
    {"attributes": {"type": "Order"}, "id": created["id"], "Status": "Approved"},
    {"attributes": {"type": "Order"}, "id": order_id, "Status": "Approved"},
]})
assert [r["success"] for r in results] == [True, True], results
print(f"create/collection update: {created['id']} and {order_id} approved")

# Usage as Salesforce reports it, in Sforce-Limit-Info and the limits resource.
used, total = sf.api_usage["api-usage"]
limits = sf.limits()["DailyApiRequests"]
assert 0 < used < total == limits["Max"], (used, total, limits)
print(f"api usage: {used}/{total}")
print("simple-salesforce: OK")
