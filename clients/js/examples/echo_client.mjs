// The echo client of docs/examples.md: ping, typed `echo`, raw `weft.echo`, info.
//   node echo_client.mjs [ADDR] [TEXT...]      (default tcp://127.0.0.1:7410)
import { Client, ServerError } from "weft-client";

const [addr = "tcp://127.0.0.1:7410", ...rest] = process.argv.slice(2);
const texts = rest.length ? rest : ["hello, weft"];
const c = new Client(addr);
try {
  const w = await c.connect();
  console.log(`connected to ${addr}: server ${w.server_name} (${w.server_id}), version ${w.version}, features ${JSON.stringify(w.features)}`);
  const t0 = performance.now();
  const p = await c.ping();
  console.log(`weft.ping -> pong=${p.pong} server_time_ms=${p.server_time_ms} in ${((performance.now() - t0) * 1000).toFixed(0)}µs`);
  for (const text of texts) {
    try {
      const r = await c.call("echo", { text });
      console.log(`echo "${text}" -> "${r.text}" (${r.chars} chars)`);
    } catch (e) {
      if (!(e instanceof ServerError)) throw e;
      console.log(`echo "${text}" -> error server error: ${e.message} ${JSON.stringify(e.details ?? null)}`);
    }
    console.log(`weft.echo "${text}" -> "${await c.echo(text)}"`);
  }
  const i = await c.info();
  console.log(`weft.info -> name=${i.name} version=${i.version} uptime=${i.uptime_s.toFixed(1)}s transports=${JSON.stringify(i.transports)} endpoints=${JSON.stringify(i.endpoints)}`);
} finally {
  await c.close();
}
