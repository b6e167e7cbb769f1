// Produce a few keyed records to a topic and print where each went.
//   node producer.mjs [ADDR] [TOPIC]      (ADDR may be http://127.0.0.1:7480: the same calls over the gateway)
import { Client, ConflictError } from "weft-client";

const args = process.argv.slice(2);
const addr = args[0]?.includes("://") ? args.shift() : "tcp://127.0.0.1:7400";
const topic = args[0] ?? "orders";
const c = new Client(addr);
try {
  await c.createTopic(topic, { partitions: 3 });
} catch (e) {
  if (!(e instanceof ConflictError)) throw e; // already there
}
const records = [{ key: "k1", value: "first" }, { key: "k2", value: "second", headers: [["source", "example"]] }, { key: "k1", value: "third" }];
const results = await c.produce(topic, records);
results.forEach((r, i) => console.log(r.error ? `${records[i].value} -> ${r.error.message}` : `${records[i].value} -> partition ${r.partition} offset ${r.offset}`));
await c.close();
