// Closed-loop throughput of the JS client (and of ioredis for comparison).
//   node bench.mjs weft ADDR SECONDS        node bench.mjs redis HOST:PORT SECONDS
// Prints one JSON line per workload: {"client", "workload", "ops", "seconds", "per_s"}.
const [kind, target, secsArg] = process.argv.slice(2);
const seconds = Number(secsArg);
const VALUE = new Uint8Array(100).fill(120);

async function timed(client, workload, inflight, step) {
  let count = 0;
  let stop = performance.now() + 300;
  // (not `count += await step()`: that reads count before the await and loses concurrent updates)
  const worker = async () => { while (performance.now() < stop) { const n = await step(); count += n; } };
  await Promise.all(Array.from({ length: inflight }, worker)); // warm-up
  count = 0;
  const t0 = performance.now();
  stop = t0 + seconds * 1000;
  await Promise.all(Array.from({ length: inflight }, worker));
  const dt = (performance.now() - t0) / 1000;
  console.log(JSON.stringify({ client, workload, ops: count, seconds: Number(dt.toFixed(3)), per_s: Math.round(count / dt) }));
}

if (kind === "weft") {
  const { Client } = await import(process.env.WEFT_JS ?? "../js/dist/index.js");
  const c = new Client(target);
  await timed("weft-js", "ping, 1 in flight", 1, async () => (await c.ping(), 1));
  await timed("weft-js", "ping, 16 in flight", 16, async () => (await c.ping(), 1));
  const topic = `bench-js-${Date.now()}`;
  await c.createTopic(topic, { partitions: 1 });
  await timed("weft-js", "produce 100 B, 1 record/request", 1, async () => (await c.produce(topic, [VALUE])).length);
  const batch = Array(100).fill(VALUE);
  await timed("weft-js", "produce 100 B, 100 records/request", 1, async () => (await c.produce(topic, batch)).length);
  await c.close();
} else {
  const { default: Redis } = await import(process.env.IOREDIS ?? "ioredis");
  const [host, port] = target.split(":");
  const r = new Redis({ host, port: Number(port), enableAutoPipelining: false });
  await timed("ioredis", "ping, 1 in flight", 1, async () => (await r.ping(), 1));
  await timed("ioredis", "ping, 16 in flight", 16, async () => (await r.ping(), 1));
  const key = `bench-js-${Date.now()}`;
  await timed("ioredis", "produce 100 B, 1 record/request", 1, async () => (await r.xadd(key, "*", "v", Buffer.from(VALUE)), 1));
  await timed("ioredis", "produce 100 B, 100 records/request", 1, async () => {
    const p = r.pipeline();
    for (let i = 0; i < 100; i++) p.xadd(key, "*", "v", Buffer.from(VALUE));
    return (await p.exec()).length;
  });
  await r.del(key);
  r.disconnect();
}
