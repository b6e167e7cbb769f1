// The dice-roller client of docs/examples.md: one call from the command line,
// or a demo that also shows two refusals.
//   node dice_client.mjs [ADDR] [roll SIDES | roll_times SIDES N | guess SIDES G]
import { Client, ValidationError } from "weft-client";

const args = process.argv.slice(2);
const addr = args[0]?.includes("://") ? args.shift() : "tcp://127.0.0.1:7410";
const COMMANDS = { roll: ["sides"], roll_times: ["sides", "how_many"], guess: ["sides", "guess"] };

let plan;
if (args.length) { // parse before connecting: a typo costs no round trip
  const [route, ...nums] = args;
  const fields = COMMANDS[route];
  if (!fields || nums.length !== fields.length || nums.some((n) => !/^\d+$/.test(n))) {
    console.error("usage: dice_client.mjs [ADDR] roll SIDES | roll_times SIDES N | guess SIDES G");
    process.exit(2);
  }
  plan = [[route, Object.fromEntries(fields.map((f, i) => [f, Number(nums[i])]))]];
} else {
  plan = [
    ["roll", { sides: 6 }], ["roll", { sides: 20 }], ["roll_times", { sides: 6, how_many: 10 }],
    ["guess", { sides: 6, guess: 3 }], ["roll", { sides: 0 }], ["roll_times", { sides: 6, how_many: 1001 }],
  ];
}

const c = new Client(addr);
await c.connect();
console.log(`connected to ${addr}`);
for (const [route, body] of plan) {
  const shown = `{${Object.entries(body).map(([k, v]) => `${k}: ${v}`).join(", ")}}`;
  try {
    const r = await c.call(route, body);
    if (route === "roll_times") console.log(`${route} ${shown} -> [${r.join(", ")}] (sum ${r.reduce((a, b) => a + b, 0)})`);
    else if (route === "guess") console.log(`${route} ${shown} -> rolled ${r.rolled}, ${r.correct ? "correct!" : "wrong"}`);
    else console.log(`${route} ${shown} -> ${r}`);
  } catch (e) {
    if (!(e instanceof ValidationError)) throw e; // any other error ends the client
    console.log(`${route} ${shown} -> refused (validation): ${e.serverMessage} ${JSON.stringify(e.details)}`);
  }
}
await c.close();
