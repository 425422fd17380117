// llamacpp_greedy.mjs: the greedy ids llama.cpp gives on a GGUF file, as
// the JSON of model/testdata/*.llamacpp.json (the parity tests of
// model/quant_gguf_test.go read it).
//
//   npm install node-llama-cpp@3.21.1        # prebuilt binaries, CPU
//   node scripts/llamacpp_greedy.mjs FILE.gguf N [--top=K] PROMPT_IDS...  > out.json
//
// PROMPT_IDS are comma-separated token ids (BOS included), one argument per
// prompt: ids rather than text, so no tokenizer takes part. Each prompt is
// evaluated in a fresh sequence at temperature 0 (greedy) for N tokens (or
// to EOS), on one CPU thread, the KV cache in llama.cpp's default F16. With
// --top=K each prompt also gets top_logprobs: for every generated token the
// K most likely tokens at its position as [id, log-probability] (llama.cpp's
// softmax of its logits), most likely first.
import {createHash} from "node:crypto";
import {existsSync, readFileSync} from "node:fs";
import {dirname, join} from "node:path";
import {fileURLToPath} from "node:url";
import {getLlama} from "node-llama-cpp";

const [file, n, ...rest] = process.argv.slice(2);
const topArg = rest[0]?.startsWith("--top=") ? rest.shift() : "--top=0";
const top = Number(topArg.slice("--top=".length));
const prompts = rest;
// The installed version, from the package.json above the module's entry.
let dir = dirname(fileURLToPath(import.meta.resolve("node-llama-cpp")));
while (!existsSync(join(dir, "package.json"))) dir = dirname(dir);
const version = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")).version;
const llama = await getLlama({gpu: false, build: "never"});
const model = await llama.loadModel({modelPath: file});
const ctx = await model.createContext({contextSize: 256, threads: 1});
const out = [];
for (const p of prompts) {
  const seq = ctx.getSequence();
  const ids = p.split(",").map(Number);
  const greedy = [], tops = [];
  for await (const o of seq.evaluateWithMetadata(ids, {probabilities: top > 0}, {temperature: 0})) {
    greedy.push(o.token);
    if (top > 0) tops.push([...o.probabilities.entries()].slice(0, top).map(([id, p]) => [id, Number(Math.log(p).toFixed(6))]));
    if (greedy.length >= Number(n)) break;
  }
  out.push(top > 0 ? {prompt_ids: ids, greedy_ids: greedy, top_logprobs: tops} : {prompt_ids: ids, greedy_ids: greedy});
  seq.dispose();
}
// One prompt a line, so the files stay readable.
const head = JSON.stringify({
  what: `greedy ids (temperature 0, ${n} tokens) of llama.cpp (node-llama-cpp ${version}, prebuilt, CPU, 1 thread) on ${file.split("/").pop()}`,
  file_sha256: createHash("sha256").update(readFileSync(file)).digest("hex"),
}, null, 1);
console.log(`${head.slice(0, -2)},\n "prompts": [\n${out.map((p) => `  ${JSON.stringify(p)}`).join(",\n")}\n ]\n}`);
