// serve_load.mjs URL [options] -- the load generator of bench/serve.sh: drives a running
// `spry serve` with the official `openai` npm client (v6), streaming completions, greedy.
//
//   sequential: N requests one after another (the baseline);
//   cN:         N concurrent clients, each sending its requests back to back.
//
// Every request has its own prompt of ~32 tokens (random common words from a fixed seed, so no
// two requests share a prefix block and the prefix cache does not shortcut any level), asks for
// max_tokens tokens at temperature 0 with stream_options.include_usage (the usage chunk gives
// the generated token count; a request that stops early at <|endoftext|> is counted with the
// tokens it got and its finish_reason is reported). Per level: requests/s and generated
// tokens/s over the level's wall time, p50/p99 end-to-end latency and time to first token
// (client side: from the call to the last / first non-empty chunk), p50 inter-token latency
// (gaps between consecutive non-empty chunks of a request; chunks/token says whether a chunk is
// one token), plus /metrics deltas (engine steps, preemptions, prefix-cache hits, server-side
// mean TTFT/ITL) and the peak of spry_num_requests_running sampled every 100 ms.
// Percentiles interpolate linearly between order statistics (numpy's default), so with 32
// samples p99 lies between the two slowest requests.
// Prints a table, then `RESULT serve_<figure>_c<N> spry=<cN> sequential=<seq> ratio=<cN/seq>
// unit=...` lines. Exits 1 when any request failed or the server stopped answering.
import os from 'node:os';
import OpenAI from 'openai';

const args = process.argv.slice(2);
const URL_ = args.shift();
const opt = { model: 'bench', requests: 32, perClient: 4, levels: '1,8,32', maxTokens: 64, words: 31, warmup: 2, seed: 1234 };
for (let i = 0; i < args.length; i += 2) {
    const k = args[i].replace(/^--/, '').replace(/-(.)/g, (_, c) => c.toUpperCase());
    if (!(k in opt)) { console.error(`serve_load: unknown option ${args[i]}`); process.exit(2); }
    opt[k] = typeof opt[k] === 'number' ? Number(args[i + 1]) : args[i + 1];
}
if (!URL_) { console.error('usage: serve_load.mjs URL [--requests N] [--per-client N] [--levels 1,8,32] [--max-tokens N]'); process.exit(2); }
const levels = opt.levels.split(',').map(Number);

const client = new OpenAI({ baseURL: `${URL_}/v1`, apiKey: 'none', maxRetries: 0, timeout: 120000 });

// ---- prompts: deterministic, distinct per request ----
const WORDS = ('time year people way day man thing woman life child world school state family student group ' +
    'country problem hand part place case week company system program question work government number night ' +
    'point home water room mother area money story fact month lot right study book eye job word business issue ' +
    'side kind head house service friend father power hour game line end member law car city community name ' +
    'president team minute idea kid body information back parent face others level office door health person ' +
    'art war history party result change morning reason research girl guy moment air teacher force education').split(' ');
let rng = opt.seed >>> 0;
function rand() { // mulberry32
    rng = (rng + 0x6D2B79F5) >>> 0;
    let t = rng;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
function prompt() {
    const w = [];
    for (let i = 0; i < opt.words; i++) w.push(WORDS[Math.floor(rand() * WORDS.length)]);
    w[0] = w[0][0].toUpperCase() + w[0].slice(1);
    return w.join(' ');
}

// ---- one streamed request ----
async function one(p) {
    const r = { ok: false, ttft: NaN, e2e: NaN, gaps: [], chunks: 0, tokens: 0, promptTokens: 0, finish: null, error: null };
    const t0 = performance.now();
    try {
        const stream = await client.completions.create({
            model: opt.model, prompt: p, max_tokens: opt.maxTokens, temperature: 0, stream: true,
            stream_options: { include_usage: true },
        });
        let last = NaN;
        for await (const c of stream) {
            const now = performance.now();
            if (c.usage) { r.tokens = c.usage.completion_tokens; r.promptTokens = c.usage.prompt_tokens; }
            const ch = c.choices?.[0];
            if (!ch) continue;
            if (ch.finish_reason) r.finish = ch.finish_reason;
            if (ch.text) {
                if (r.chunks === 0) r.ttft = (now - t0) / 1e3;
                else r.gaps.push((now - last) / 1e3);
                last = now;
                r.chunks++;
            }
        }
        r.e2e = (performance.now() - t0) / 1e3;
        r.ok = r.tokens > 0 && r.finish !== null;
        if (!r.ok) r.error = `no tokens or no finish_reason (tokens ${r.tokens}, finish ${r.finish})`;
    } catch (e) {
        r.e2e = (performance.now() - t0) / 1e3;
        r.error = `${e?.constructor?.name}${e?.status ? ' ' + e.status : ''}: ${String(e?.message).slice(0, 200)}`;
    }
    return r;
}

// ---- /metrics ----
async function metrics() {
    const res = await fetch(`${URL_}/metrics`, { signal: AbortSignal.timeout(10000) });
    const m = {};
    for (const line of (await res.text()).split('\n')) {
        if (!line || line.startsWith('#')) continue;
        const i = line.lastIndexOf(' ');
        m[line.slice(0, i)] = Number(line.slice(i + 1));
    }
    return m;
}
async function healthy() {
    try {
        const r = await fetch(`${URL_}/health`, { signal: AbortSignal.timeout(10000) });
        return r.status === 200;
    } catch { return false; }
}

function pct(xs, q) {
    const a = xs.filter((x) => Number.isFinite(x)).sort((x, y) => x - y);
    if (!a.length) return NaN;
    const h = (a.length - 1) * q, lo = Math.floor(h), hi = Math.ceil(h);
    return a[lo] + (a[hi] - a[lo]) * (h - lo);
}

// Runs `clients` workers, each sending `each` requests back to back; returns the level's figures.
async function level(name, clients, each) {
    const prompts = Array.from({ length: clients * each }, prompt); // drawn before the clock starts
    const m0 = await metrics();
    let peakRunning = 0, sampling = true;
    const sampler = (async () => {
        while (sampling) {
            try { peakRunning = Math.max(peakRunning, (await metrics()).spry_num_requests_running ?? 0); } catch { /* ignore */ }
            await new Promise((r) => setTimeout(r, 100));
        }
    })();
    const results = [];
    const t0 = performance.now();
    await Promise.all(Array.from({ length: clients }, async (_, c) => {
        for (let i = 0; i < each; i++) results.push(await one(prompts[c * each + i]));
    }));
    const wall = (performance.now() - t0) / 1e3;
    sampling = false;
    await sampler;
    const m1 = await metrics();
    const d = (k) => (m1[k] ?? NaN) - (m0[k] ?? NaN);
    const ok = results.filter((r) => r.ok);
    const tokens = ok.reduce((s, r) => s + r.tokens, 0);
    const chunks = ok.reduce((s, r) => s + r.chunks, 0);
    const finish = {};
    for (const r of results) finish[r.finish ?? 'none'] = (finish[r.finish ?? 'none'] ?? 0) + 1;
    return {
        name, clients, n: results.length, nOk: ok.length, errors: results.filter((r) => !r.ok).map((r) => r.error),
        wall, rps: ok.length / wall, tps: tokens / wall, tokens, chunksPerToken: chunks / Math.max(1, tokens),
        promptTokens: ok.reduce((s, r) => s + r.promptTokens, 0) / Math.max(1, ok.length),
        latP50: pct(ok.map((r) => r.e2e), 0.5), latP99: pct(ok.map((r) => r.e2e), 0.99),
        ttftP50: pct(ok.map((r) => r.ttft), 0.5), ttftP99: pct(ok.map((r) => r.ttft), 0.99),
        itlP50: pct(ok.flatMap((r) => r.gaps), 0.5), itlP99: pct(ok.flatMap((r) => r.gaps), 0.99),
        finish, peakRunning,
        steps: d('spry_engine_steps_total'), preempt: d('spry_preemptions_total'),
        engGen: d('spry_engine_generation_tokens_total'), engPrompt: d('spry_engine_prompt_tokens_total'),
        prefixHits: d('spry_prefix_cache_hits_total'), prefixQueries: d('spry_prefix_cache_queries_total'),
        srvTtft: d('spry_time_to_first_token_seconds_sum') / d('spry_time_to_first_token_seconds_count'),
        srvItl: d('spry_inter_token_latency_seconds_sum') / d('spry_inter_token_latency_seconds_count'),
        rejected: d('spry_requests_rejected_total'), http5xx: d('spry_http_responses_total{code="500"}') + d('spry_http_responses_total{code="503"}'),
    };
}

async function main() {
    if (!(await healthy())) { console.log(`serve_load: ${URL_}/health is not 200`); process.exit(1); }
    for (let i = 0; i < opt.warmup; i++) await one(prompt()); // first-touch of weights and KV pages
    const out = [];
    let dead = false;
    for (const [name, c, each] of [['sequential', 1, opt.requests], ...levels.map((c) => [`c${c}`, c, Math.max(opt.perClient, Math.ceil(opt.requests / c))])]) {
        const r = await level(name, c, each);
        out.push(r);
        console.log(`${name}: ${r.nOk}/${r.n} ok in ${r.wall.toFixed(2)} s, ${r.tps.toFixed(1)} tokens/s, peak running ${r.peakRunning}, finish ${JSON.stringify(r.finish)}, load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
        for (const e of [...new Set(r.errors)].slice(0, 5)) console.log(`  error (${r.errors.filter((x) => x === e).length}x): ${e}`);
        if (!(await healthy())) { console.log(`serve_load: server stopped answering /health after ${name}`); dead = true; break; }
    }

    const f = (x, d = 3) => (Number.isFinite(x) ? x.toFixed(d) : 'nan');
    const cols = [
        ['level', (r) => r.name], ['clients', (r) => r.clients], ['reqs', (r) => `${r.nOk}/${r.n}`], ['wall_s', (r) => f(r.wall, 2)],
        ['req/s', (r) => f(r.rps, 2)], ['tok/s', (r) => f(r.tps, 1)], ['x_seq', (r) => f(r.tps / out[0].tps, 2)],
        ['lat_p50', (r) => f(r.latP50)], ['lat_p99', (r) => f(r.latP99)], ['ttft_p50', (r) => f(r.ttftP50, 4)],
        ['ttft_p99', (r) => f(r.ttftP99, 4)], ['itl_p50', (r) => f(r.itlP50, 4)], ['itl_p99', (r) => f(r.itlP99, 4)],
        ['peak_run', (r) => r.peakRunning],
    ];
    const cols2 = [
        ['level', (r) => r.name], ['prompt_tok', (r) => f(r.promptTokens, 1)], ['gen_tok', (r) => r.tokens], ['chunks/tok', (r) => f(r.chunksPerToken, 2)],
        ['steps', (r) => r.steps], ['gen_tok/step', (r) => f(r.engGen / r.steps, 2)], ['preempt', (r) => r.preempt],
        ['prefix_hit/q', (r) => `${r.prefixHits}/${r.prefixQueries}`], ['srv_ttft', (r) => f(r.srvTtft, 4)], ['srv_itl', (r) => f(r.srvItl, 4)],
        ['503s/500s', (r) => `${r.rejected}/${r.http5xx}`],
    ];
    const table = (cs) => {
        const rows = [cs.map((c) => c[0]), ...out.map((r) => cs.map((c) => String(c[1](r))))];
        const w = cs.map((_, i) => Math.max(...rows.map((row) => row[i].length)));
        for (const row of rows) console.log(row.map((v, i) => v.padStart(w[i])).join('  '));
    };
    console.log(`\n== client side (seconds; tok/s = generated tokens / wall; x_seq = tok/s over sequential)`);
    table(cols);
    console.log(`\n== server side (/metrics deltas per level; spry_engine_steps_total also counts the idle engine's 0.1 s wake-ups)`);
    table(cols2);
    console.log('');

    const seq = out[0];
    for (const r of out.slice(1)) {
        const res = (fig, k, unit, d) => console.log(`RESULT serve_${fig}_${r.name} spry=${f(r[k], d)} sequential=${f(seq[k], d)} ratio=${f(r[k] / seq[k], 3)} unit=${unit}`);
        res('tokens_per_s', 'tps', 'tokens/s', 1);
        res('requests_per_s', 'rps', 'requests/s', 3);
        res('p50_latency', 'latP50', 's_lower_is_better', 4);
        res('p99_latency', 'latP99', 's_lower_is_better', 4);
        res('p50_ttft', 'ttftP50', 's_lower_is_better', 4);
        res('p99_ttft', 'ttftP99', 's_lower_is_better', 4);
        res('p50_itl', 'itlP50', 's_lower_is_better', 4);
    }
    const failed = out.reduce((s, r) => s + r.n - r.nOk, 0);
    if (failed || dead) { console.log(`serve_load: ${failed} failed requests${dead ? ', server stopped answering' : ''}`); process.exit(1); }
}
main().catch((e) => { console.log(`serve_load: ${e?.stack ?? e}`); process.exit(1); });
