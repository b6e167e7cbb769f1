// Interleaved closed-loop windows, for a loaded machine: each round runs every
// client for WINDOW ms on each workload, one after the other, so that load
// from elsewhere falls on all of them alike; prints the median and the best
// window per client and workload (one JSON line each).
//   node interleave.mjs WEFT_ADDR REDIS_HOST:PORT ROUNDS WINDOW_MS [extra weft-client dist/index.js as "old"]
const [addr, redisAt, roundsArg, windowArg, oldDist] = process.argv.slice(2);
const rounds = Number(roundsArg ?? 20);
const windowMs = Number(windowArg ?? 250);
const VALUE = new Uint8Array(100).fill(120);
const { Client } = await import(process.env.WEFT_JS ?? "../js/dist/index.js");
const { default: Redis } = await import(process.env.IOREDIS ?? "ioredis");
const [host, port] = redisAt.split(":");
const topic = `bench-il-${Date.now()}`;
const clients = {};
const add = async (name, C) => {
  const c = new C(addr);
  await c.connect();
  clients[name] = { ping: () => c.ping(), produce: () => c.produce(topic, [VALUE]), close: () => c.close() };
  return c;
};
const first = await add("weft-js", Client);
await first.createTopic(topic, { partitions: 1 });
if (oldDist) await add("weft-js-old", (await import(oldDist)).Client);
const r = new Redis({ host, port: Number(port), enableAutoPipelining: false });
const key = `bench-il-${Date.now()}`;
const rv = Buffer.from(VALUE);
clients.ioredis = { ping: () => r.ping(), produce: () => r.xadd(key, "*", "v", rv), close: async () => { await r.del(key); r.disconnect(); } };
const rates = {};
async function window(step) {
  let n = 0;
  const t0 = performance.now();
  const end = t0 + windowMs;
  while (performance.now() < end) { await step(); n++; }
  return n / ((performance.now() - t0) / 1000);
}
for (const c of Object.values(clients)) for (const w of ["ping", "produce"]) await window(c[w]); // warm-up
for (let i = 0; i < rounds; i++) {
  for (const w of ["ping", "produce"]) {
    for (const [name, c] of Object.entries(clients)) ((rates[`${name}\0${w}`] ??= [])).push(await window(c[w]));
  }
}
for (const [k, v] of Object.entries(rates)) {
  const [client, w] = k.split("\0");
  v.sort((a, b) => a - b);
  const workload = w === "ping" ? "ping, 1 in flight" : "produce 100 B, 1 record/request";
  console.log(JSON.stringify({ client, workload, windows: v.length, median_per_s: Math.round(v[v.length >> 1]), best_per_s: Math.round(v[v.length - 1]) }));
}
for (const c of Object.values(clients)) await c.close();
