// A consumer group member: prints records as they come, commits as it goes
// (every 5 s and on exit), shares partitions with other members of the group.
// Run two and watch the partitions split; Ctrl-C leaves the group.
//   node consumer.mjs [ADDR] [TOPIC] [GROUP]
import { Client } from "weft-client";

const args = process.argv.slice(2);
const addr = args[0]?.includes("://") ? args.shift() : "tcp://127.0.0.1:7400";
const [topic = "orders", group = "billing"] = args;
const c = new Client(addr);
const consumer = c.consumer(group, [topic], { autoOffsetReset: "earliest" });
process.on("SIGINT", async () => {
  await consumer.close(); // commits what was printed, leaves the group
  await c.close();
  process.exit(0);
});
const td = new TextDecoder();
for await (const r of consumer) {
  console.log(`${r.topic}/${r.partition}@${r.offset} ${r.key ? td.decode(r.key) : ""}: ${r.value ? td.decode(r.value) : ""}`);
}
