// llamacpp_test.mjs SPRY TMP -- the llama.cpp side of tests/llamacpp_test.sh.
//
// Loads every GGUF the .sh wrote (TMP/{gpt2,bloom}_{f32,f16,q8_0,q4_0}.gguf) in llama.cpp through
// node-llama-cpp's prebuilt CPU binaries (getLlama with gpu: false and build: "never", so nothing
// is compiled or downloaded) and compares it with spry on the same weights:
//   tokenizer  llama.cpp's tokenizer, built from the file's tokenizer.ggml.* keys, gives the ids
//              `spry tokenize` gives for the probe text and the prompts, and decodes them back.
//   loss       the mean next-token NLL over the probe's first 33 tokens (32 predictions), from the
//              full softmax of llama.cpp's logits (controlledEvaluate, temperature 1, no top-k/p),
//              against `spry eval` on the GGUF converted back to an f32 directory, within
//              LOSS_TOL: llama.cpp rounds activations to f16 (f16 matrices) or Q8_0 (Q8_0 and
//              Q4_0 matrices) before its dot products where `spry eval` keeps them f32.
//   greedy     N_NEW tokens from each prompt's token ids with llama.cpp's greedy sampler must
//              equal, as text, `spry serve --model FILE.gguf` (the same weights in the file's own
//              type, prompt sent as token ids, temperature 0) and, for f32 and f16, `spry generate
//              --temperature 0` on the trained f32 directory. Without `spry serve` (no
//              libmicrohttpd) every file is compared with `spry generate` on its f32 directory.
//              The smallest top-1 - top-2 probability margin over the greedy steps is printed.
// Prints one summary line per file, llama.cpp's warnings, and "N passed, M failed"; exits 1 on any
// failure. Everything runs on one thread: spry's and llama.cpp's threads spin-wait, and with two
// threads each on a loaded 2-core box a file took 10-20 s instead of 0.3 s.
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';

const [SPRY, TMP] = process.argv.slice(2);
// an await that never settles empties the event loop and node exits, with 0 once node-llama-cpp is
// loaded: count that as a failure
let finished = false;
process.on('exit', () => {
    if (!finished) { console.log('FAIL: llamacpp_test.mjs stopped before its end'); process.exitCode = 1; }
});
const ARCHS = ['gpt2', 'bloom'];
const TYPES = ['f32', 'f16', 'q8_0', 'q4_0'];
const N_NEW = 16; // the longest prompt + N_NEW stays within the GPT-2's 32 positions
const PROMPTS = ['The river ran past', 'The river ran past mill number 4 and stone', ' and the children watched'];
// |mean NLL llama.cpp - mean NLL spry| in nats. Measured (AMD EPYC with AVX-512): 5e-6 (f32),
// 1e-5 (f16), 2e-5..1.2e-4 (q8_0, q4_0). Quantizing moves the loss by about 2e-4 (q8_0) and
// 3e-3..1e-2 (q4_0), so the q4_0 bound also tells the quantized weights from the f32 ones.
const LOSS_TOL = { f32: 5e-5, f16: 1e-4, q8_0: 5e-4, q4_0: 5e-4 };
const TOK = `${TMP}/tok.json`;

let pass = 0, fail = 0;
const failures = []; // the current file's, for its summary line
function check(cond, what, extra) {
    if (cond) { pass++; return true; }
    fail++;
    failures.push(what);
    console.log(`FAIL: ${what}${extra !== undefined ? ': ' + JSON.stringify(extra).slice(0, 400) : ''}`);
    return false;
}
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

// ---- spry's side -------------------------------------------------------------------------------
function spry(args, input) {
    return execFileSync(SPRY, args, { input, encoding: 'utf8', timeout: 60000, stdio: ['pipe', 'pipe', 'pipe'] });
}
const tokenize = (text) => JSON.parse(spry(['tokenize', '--tokenizer', TOK], text));
const decode = (ids) => spry(['tokenize', '--tokenizer', TOK, '--decode', '--skip-special'], JSON.stringify(ids));
function spryEvalLoss(dir) {
    const out = spry(['eval', '--model', dir, '--data', `${TMP}/probe`, '--split', '1,0,0', '--which', 'train',
        '--seq', '32', '--batch', '1', '--max-batches', '1', '--threads', '1']);
    return JSON.parse(out).loss;
}
// prompt + greedy continuation, as `spry generate` prints it (with a newline)
const spryGenerate = (dir, prompt) => spry(['generate', '--model', dir, '--tokenizer', TOK, '--prompt', prompt,
    '--temperature', '0', '--max-new', String(N_NEW), '--threads', '1']);

// `spry serve --model FILE.gguf` on a free loopback port. Resolves to {url, stop} once it says
// "ready", to null if spry was built without libmicrohttpd; rejects on any other failure.
function startServe(gguf) {
    const p = spawn(SPRY, ['serve', '--model', gguf, '--tokenizer', TOK, '--host', '127.0.0.1', '--port', '0',
        '--threads', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '', ready = false;
    const exited = new Promise((r) => p.once('exit', r));
    return new Promise((resolve, reject) => {
        const timer = setTimeout(() => { p.kill('SIGKILL'); reject(new Error(`spry serve ${gguf}: not ready in 20 s: ${log}`)); }, 20000);
        const onData = (d) => {
            log += d;
            const url = log.match(/listening on (http:\/\/[0-9.:]+)/);
            if (!ready && url && /ready/.test(log)) {
                ready = true;
                clearTimeout(timer);
                resolve({ url: url[1], stop: () => { p.kill('SIGTERM'); return exited; } });
            }
        };
        p.stdout.on('data', onData);
        p.stderr.on('data', onData);
        exited.then((code) => {
            if (ready) return;
            clearTimeout(timer);
            if (/built without libmicrohttpd/.test(log)) resolve(null);
            else reject(new Error(`spry serve ${gguf} exited ${code}: ${log}`));
        });
    });
}
async function serveGreedy(url, ids) { // the completion's text
    const r = await fetch(`${url}/v1/completions`, {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, signal: AbortSignal.timeout(30000),
        body: JSON.stringify({ prompt: ids, max_tokens: N_NEW, temperature: 0 }),
    });
    const body = await r.json();
    if (r.status !== 200) throw new Error(`spry serve: ${r.status} ${JSON.stringify(body)}`);
    return body.choices[0].text;
}

// ---- llama.cpp's side --------------------------------------------------------------------------
const llamaLog = new Map(); // llama.cpp's warnings and errors -> the files that gave them
let current = '(init)';     // the file being loaded
const llama = await getLlama({
    gpu: false, build: 'never', progressLogs: false, logLevel: LlamaLogLevel.warn,
    logger: (level, message) => {
        const m = message.trim();
        if (m) llamaLog.set(m, new Set([...(llamaLog.get(m) ?? []), current]));
    },
});
const FULL = { temperature: 1, topK: 0, topP: 1, minP: 0 }; // the whole softmax of the logits

// the next-token distribution (a Map token -> probability) after each prefix of `ids`
async function distributions(seq, ids) {
    await seq.clearHistory();
    const res = await seq.controlledEvaluate(ids.map((t) => [t, { generateNext: { probabilities: true, options: FULL } }]));
    return ids.map((_, i) => res[i]?.next?.probabilities);
}
// N_NEW tokens after `ids` from llama.cpp's greedy sampler, cut before an end-of-generation token
// (llama.cpp's) or spry's stop token `eot`, as spry stops there
async function greedy(seq, model, ids, eot) {
    await seq.clearHistory();
    const out = [];
    for await (const t of seq.evaluate(ids, { temperature: 0, yieldEogToken: true })) {
        if (model.isEogToken(t) || t === eot) break;
        out.push(t);
        if (out.length === N_NEW) break;
    }
    return out;
}
function margin(p) { // top-1 minus top-2 probability
    const v = [...p.values()].sort((a, b) => b - a);
    return v[0] - (v[1] ?? 0);
}

const probeText = readFileSync(`${TMP}/probe.txt`, 'utf8');
const probe = tokenize(probeText);
const prompts = PROMPTS.map((text) => ({ text, ids: tokenize(text) }));
const eot = JSON.parse(spry(['tokenize', '--tokenizer', TOK, '--parse-special'], '<|endoftext|>'))[0];
check(probe.length >= 33, 'the probe has at least 33 tokens', probe.length);
check(Math.max(...prompts.map((p) => p.ids.length)) + N_NEW <= 32, 'the prompts leave room for N_NEW tokens in 32 positions');
const spryGen = new Map(); // `spry generate` on the trained f32 directory, per arch and prompt
for (const arch of ARCHS)
    for (const p of prompts) spryGen.set(`${arch}|${p.text}`, spryGenerate(`${TMP}/run_${arch}/step_30`, p.text));

const t0 = Date.now();
let haveServe = true;
for (const arch of ARCHS) {
    for (const ty of TYPES) {
        const file = `${arch}_${ty}.gguf`, back = `${TMP}/${arch}_${ty}.dir`; // back: the GGUF as an f32 dir
        failures.length = 0;
        current = file;
        const f0 = Date.now();
        let model, ctx, server;
        let line = `llamacpp: ${file.padEnd(15)}`;
        try {
            model = await llama.loadModel({ modelPath: `${TMP}/${file}` }).catch((e) => { line += ' NOT LOADED'; throw e; });
            ctx = await model.createContext({ contextSize: 64, batchSize: 64, threads: 1 });
            const seq = ctx.getSequence();
            line += ` loaded (eos ${model.tokens.eos ?? 'none'})`;

            // the tokenizer keys
            let tokOk = true;
            for (const { text, ids } of [{ text: probeText, ids: probe }, ...prompts]) {
                const got = model.tokenize(text, false);
                tokOk = check(same(got, ids), `${file}: llama.cpp tokenizes '${text}' as spry does`, { llama: got, spry: ids }) && tokOk;
                const txt = model.detokenize(ids);
                tokOk = check(txt === text, `${file}: llama.cpp decodes spry's ids of '${text}'`, txt) && tokOk;
            }
            line += `; tokenizer ${tokOk ? 'ok' : 'DIFFERS'}`;

            // the loss on the probe against `spry eval` on the same weights
            const dist = await distributions(seq, probe.slice(0, 32));
            let nll = 0;
            for (let i = 0; i < 32; i++) nll -= Math.log(dist[i]?.get(probe[i + 1]) ?? 0);
            nll /= 32;
            const ref = spryEvalLoss(back), d = Math.abs(nll - ref);
            check(d <= LOSS_TOL[ty], `${file}: |loss llama.cpp - spry eval| <= ${LOSS_TOL[ty]}`, { llama: nll, spry: ref });
            line += `; loss ${nll.toFixed(6)} vs spry ${ref.toFixed(6)}, |d| ${d.toExponential(1)} (tol ${LOSS_TOL[ty]})`;

            // greedy continuations; spry serve starts once llama.cpp is done with the file
            const gens = [];
            let minMargin = 1, nTok = 0;
            for (const p of prompts) {
                const gen = await greedy(seq, model, p.ids, eot);
                const dd = await distributions(seq, [...p.ids, ...gen].slice(0, -1));
                for (let i = 0; i < gen.length; i++) minMargin = Math.min(minMargin, margin(dd[p.ids.length - 1 + i]));
                gens.push(gen);
                nTok += gen.length;
            }
            if (haveServe) server = await startServe(`${TMP}/${file}`);
            if (server === null) haveServe = false;
            const refs = [];
            let nSame = 0;
            for (const [k, p] of prompts.entries()) {
                const gen = gens[k], full = decode([...p.ids, ...gen]) + '\n';
                let ok = true;
                if (haveServe) {
                    const text = decode(gen), served = await serveGreedy(server.url, p.ids);
                    ok = check(text === served, `${file}: greedy from '${p.text}': llama.cpp == spry serve`,
                        { llama: text, serve: served });
                } else {
                    const got = spryGenerate(back, p.text);
                    ok = check(got === full, `${file}: greedy from '${p.text}': llama.cpp == spry generate (its f32 dir)`,
                        { llama: full, generate: got });
                }
                if (ty === 'f32' || ty === 'f16') {
                    const got = spryGen.get(`${arch}|${p.text}`);
                    ok = check(got === full, `${file}: greedy from '${p.text}': llama.cpp == spry generate (trained dir)`,
                        { llama: full, generate: got }) && ok;
                }
                if (ok) nSame++;
            }
            refs.push(haveServe ? 'spry serve' : "spry generate on the GGUF's f32 dir (no spry serve)");
            if (ty === 'f32' || ty === 'f16') refs.push('spry generate on the trained dir');
            line += `; greedy ${nSame}/${prompts.length} prompts (${nTok} tokens) == ${refs.join(' and ')}, min top-1 margin ${minMargin.toFixed(3)}`;
        } catch (e) {
            check(false, `${file}: ${e.message}`);
        } finally {
            if (server) await server.stop();
            if (ctx) await ctx.dispose();
            if (model) await model.dispose();
            await new Promise((r) => setTimeout(r, 20)); // llama.cpp's log lines arrive asynchronously
        }
        console.log(`${line}; ${Date.now() - f0} ms: ${failures.length ? 'FAIL' : 'PASS'}`);
    }
}
if (llamaLog.size) {
    console.log("llama.cpp's warnings and errors [the files that gave them]:");
    for (const [m, files] of llamaLog) console.log(`  ${m.slice(0, 200)} [${[...files].join(', ')}]`);
}
const pkg = JSON.parse(readFileSync(new URL('../node_modules/node-llama-cpp/package.json', import.meta.url), 'utf8'));
console.log(`node-llama-cpp ${pkg.version} (llama.cpp ${llama.llamaCppRelease.release}, ${llama.buildType} CPU binaries): ` +
    `${pass} passed, ${fail} failed in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
finished = true; // (no llama.dispose(): it never settles after a model failed to load)
process.exit(fail ? 1 : 0);
