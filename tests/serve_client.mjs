// serve_client.mjs A_URL API_KEY B_URL -- the client side of tests/serve_test.sh.
//
// Server A (trained tiny GPT-2, --api-key, small --max-body, short --timeout, few KV blocks and a
// small step budget so concurrent requests are chunked and preempted) is driven by the official
// `openai` npm client (v6) and by raw fetch / sockets: completions and chat, streaming and not,
// token-id prompts, stop strings, seeds, tokenize/detokenize, every error status, malformed /
// oversized / truncated requests, then 32 concurrent greedy streams against 32 sequential ones.
// Server B (a slower untrained model, --max-seqs 2 --max-queue 0) checks 503 + Retry-After when
// full and that clients disconnecting mid-stream get their requests cancelled and KV blocks freed.
// Prints one line per failure and "N passed, M failed"; exits 1 on any failure.
import net from 'node:net';
import OpenAI from 'openai';

const [A, KEY, B] = process.argv.slice(2);
let pass = 0, fail = 0;
function check(cond, what, extra) {
    if (cond) pass++;
    else {
        fail++;
        console.log(`FAIL: ${what}${extra !== undefined ? ': ' + JSON.stringify(extra).slice(0, 600) : ''}`);
    }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const auth = { Authorization: `Bearer ${KEY}` };

async function raw(base, path, { method = 'POST', body, headers = {}, key = true } = {}) {
    const h = { ...(key ? auth : {}), ...headers };
    if (body !== undefined && !h['Content-Type']) h['Content-Type'] = 'application/json';
    const r = await fetch(base + path, {
        method, headers: h, signal: AbortSignal.timeout(30000),
        body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await r.text();
    let json = null;
    try { json = JSON.parse(text); } catch { /* not JSON */ }
    return { status: r.status, headers: r.headers, text, json };
}

function isOpenAIError(j) {
    return j && j.error && typeof j.error.message === 'string' && typeof j.error.type === 'string' &&
        'param' in j.error && 'code' in j.error;
}

async function expectRaw(base, path, opts, status, what, param) {
    const r = await raw(base, path, opts);
    check(r.status === status, `${what}: status ${status}`, { status: r.status, body: r.text });
    check(isOpenAIError(r.json), `${what}: OpenAI-shaped error body`, r.text);
    if (param !== undefined) check(r.json?.error?.param === param, `${what}: param ${param}`, r.json);
    return r;
}

async function expectApiError(fn, status, what, param, code) {
    try {
        await fn();
        check(false, `${what}: raises APIError ${status}`);
    } catch (e) {
        check(e instanceof OpenAI.APIError && e.status === status, `${what}: APIError ${status}`,
            { name: e?.constructor?.name, status: e?.status, message: e?.message });
        if (param !== undefined) check(e.param === param, `${what}: param ${param}`, { param: e.param });
        if (code !== undefined) check(e.code === code, `${what}: code ${code}`, { code: e.code });
    }
}

async function metrics(base, key = false) {
    const r = await fetch(base + '/metrics', { headers: key ? auth : {}, signal: AbortSignal.timeout(10000) });
    const text = await r.text();
    const m = {};
    for (const line of text.split('\n')) {
        if (!line || line.startsWith('#')) continue;
        const i = line.lastIndexOf(' ');
        m[line.slice(0, i)] = Number(line.slice(i + 1));
    }
    return { status: r.status, text, m };
}

// Reads an SSE response; returns the parsed events (the string '[DONE]' for the end marker).
async function sseEvents(resp) {
    const text = await resp.text();
    const parts = text.split('\n\n');
    const tail = parts.pop();
    return { framed: tail === '' && parts.every((p) => p.startsWith('data: ')),
        events: parts.map((p) => (p === 'data: [DONE]' ? '[DONE]' : JSON.parse(p.slice(6)))) };
}

async function streamText(client, params) {
    const stream = await client.completions.create({ ...params, stream: true });
    let text = '', finish = null;
    for await (const c of stream) {
        if (c.choices.length) {
            text += c.choices[0].text;
            if (c.choices[0].finish_reason) finish = c.choices[0].finish_reason;
        }
    }
    return { text, finish };
}

// Opens a socket, writes data, and reports how the server answered / closed.
function socketExchange(base, data, { end = true, waitMs = 10000 } = {}) {
    const u = new URL(base);
    return new Promise((resolve) => {
        const s = net.connect(Number(u.port), u.hostname);
        let got = '';
        const t0 = Date.now();
        const timer = setTimeout(() => { s.destroy(); resolve({ got, closed: false, ms: Date.now() - t0 }); }, waitMs);
        s.on('data', (d) => { got += d.toString('latin1'); });
        s.on('error', () => {});
        s.on('close', () => { clearTimeout(timer); resolve({ got, closed: true, ms: Date.now() - t0 }); });
        s.write(data, () => { if (end) s.end(); });
    });
}

async function main() {
    const client = new OpenAI({ baseURL: `${A}/v1`, apiKey: KEY, maxRetries: 0, timeout: 60000 });

    // ---- public endpoints, models, auth ----
    let r = await raw(A, '/health', { method: 'GET', key: false });
    check(r.status === 200 && r.json?.status === 'ok', 'GET /health without a key is 200 ok', r.text);
    r = await raw(A, '/v1/models', { method: 'GET', key: false });
    check(r.status === 200 && r.json?.object === 'list' && r.json.data?.[0]?.id === 'tiny', '/v1/models lists the alias', r.text);
    const models = await client.models.list();
    check(models.data.length === 1 && models.data[0].id === 'tiny', 'client.models.list()', models.data);
    const one = await client.models.retrieve('tiny');
    check(one.id === 'tiny' && one.object === 'model', 'client.models.retrieve()', one);
    await expectApiError(() => client.models.retrieve('other'), 404, 'unknown model id');
    await expectRaw(A, '/v1/completions', { body: { prompt: 'x' }, key: false }, 401, 'no API key');
    await expectRaw(A, '/v1/completions', { body: { prompt: 'x' }, key: false, headers: { Authorization: 'Bearer nope' } }, 401, 'wrong API key');
    const bad = new OpenAI({ baseURL: `${A}/v1`, apiKey: 'wrong', maxRetries: 0 });
    await expectApiError(() => bad.completions.create({ model: 'tiny', prompt: 'x', max_tokens: 2 }), 401, 'client with a wrong key', undefined, 'invalid_api_key');
    check((await metrics(A)).status === 401, '/metrics needs the key');
    r = await raw(A, '/v1/completions', { method: 'OPTIONS', key: false });
    check(r.status === 204 && r.headers.get('access-control-allow-origin') === '*', 'CORS preflight 204 without a key', r.status);

    // ---- completions ----
    const base = { model: 'tiny', prompt: 'The river', max_tokens: 12, temperature: 0 };
    const c1 = await client.completions.create(base);
    check(/^cmpl-/.test(c1.id) && c1.object === 'text_completion' && c1.model === 'tiny' && typeof c1.created === 'number',
        'completion id/object/model/created', c1);
    check(c1.choices.length === 1 && c1.choices[0].index === 0 && typeof c1.choices[0].text === 'string' &&
        c1.choices[0].logprobs === null && ['stop', 'length'].includes(c1.choices[0].finish_reason), 'completion choice shape', c1.choices);
    check(c1.usage.completion_tokens >= 1 && c1.usage.completion_tokens <= 12 &&
        c1.usage.total_tokens === c1.usage.prompt_tokens + c1.usage.completion_tokens, 'completion usage', c1.usage);
    check(c1.choices[0].finish_reason !== 'length' || c1.usage.completion_tokens === 12, 'length means max_tokens tokens', c1.usage);
    const c2 = await client.completions.create({ ...base, model: 'any-name' });
    check(c2.choices[0].text === c1.choices[0].text && c2.model === 'any-name', 'greedy is deterministic; model is echoed', [c1.choices[0].text, c2.choices[0].text, c2.model]);
    const s1 = await streamText(client, base);
    check(s1.text === c1.choices[0].text && s1.finish === c1.choices[0].finish_reason, 'streamed text equals the non-streamed text', [s1, c1.choices[0]]);
    const dflt = await client.completions.create({ model: 'tiny', prompt: 'The river', temperature: 0 });
    check(dflt.usage.completion_tokens === 16 || dflt.choices[0].finish_reason === 'stop', 'completions default to max_tokens 16', dflt.usage);

    // token-id prompts, one-element arrays, tokenize / detokenize
    r = await raw(A, '/tokenize', { body: { content: 'The river' } });
    const ids = r.json?.tokens;
    check(r.status === 200 && Array.isArray(ids) && ids.length > 0 && ids.every(Number.isInteger), '/tokenize', r.text);
    for (const prompt of [ids, [ids], ['The river']]) {
        const c = await client.completions.create({ ...base, prompt });
        check(c.choices[0].text === c1.choices[0].text && c.usage.prompt_tokens === ids.length,
            `prompt ${JSON.stringify(prompt)} gives the same text`, [c.choices[0].text, c1.choices[0].text]);
    }
    r = await raw(A, '/detokenize', { body: { tokens: ids } });
    check(r.status === 200 && r.json?.content === 'The river', '/detokenize inverts /tokenize', r.text);
    const uni = 'héllo wörld ✓ 日本';
    r = await raw(A, '/tokenize', { body: { content: uni } });
    const uids = r.json?.tokens ?? [];
    r = await raw(A, '/detokenize', { body: { tokens: uids } });
    check(r.json?.content === uni, 'UTF-8 round trip through tokenize/detokenize', r.text);
    const check_ids = (await raw(A, '/tokenize', { body: { content: '✓' } })).json?.tokens ?? [];
    if (check_ids.length > 1) {
        r = await raw(A, '/detokenize', { body: { tokens: [check_ids[0]] } });
        check(r.status === 200 && r.json?.content === '\ufffd', 'a partial UTF-8 character comes back as U+FFFD', r.text);
    }
    r = await raw(A, '/tokenize', { body: { content: 'a', with_pieces: true } });
    check(r.json?.tokens?.[0]?.piece === 'a', '/tokenize with_pieces', r.text);
    await expectRaw(A, '/tokenize', { body: { text: 'x' } }, 400, '/tokenize without content', 'content');
    await expectRaw(A, '/detokenize', { body: { tokens: ['a'] } }, 400, '/detokenize with a string id', 'tokens');
    await expectRaw(A, '/detokenize', { body: { tokens: [99999] } }, 400, '/detokenize with an unknown id', 'tokens');

    // stop strings: cut where the stop string starts, also across tokens and when streamed
    const long = await client.completions.create({ ...base, max_tokens: 40 });
    const T = long.choices[0].text;
    if (T.length >= 12) {
        const k = Math.floor(T.length / 3), S = T.slice(k, k + 5), want = T.slice(0, T.indexOf(S));
        const cs = await client.completions.create({ ...base, max_tokens: 40, stop: ['@@never@@', S] });
        check(cs.choices[0].text === want && cs.choices[0].finish_reason === 'stop', `stop ${JSON.stringify(S)} cuts the text`, [cs.choices[0], want]);
        check(cs.usage.completion_tokens < long.usage.completion_tokens, 'a stop string ends generation early', [cs.usage, long.usage]);
        const ss = await streamText(client, { ...base, max_tokens: 40, stop: S });
        check(ss.text === want && ss.finish === 'stop', 'streamed stop string', [ss, want]);
    } else check(false, 'the fixture model generates text for the stop test', T);

    // sampling: a seed fixes the result
    const sp = { ...base, temperature: 1.0, top_p: 0.9, top_k: 20, min_p: 0.01, presence_penalty: 0.5, frequency_penalty: 0.3, repetition_penalty: 1.1, max_tokens: 20 };
    const a1 = await client.completions.create({ ...sp, seed: 7 }), a2 = await client.completions.create({ ...sp, seed: 7 });
    check(a1.choices[0].text === a2.choices[0].text, 'same seed, same sample', [a1.choices[0].text, a2.choices[0].text]);
    const seeds = new Set();
    for (let sd = 1; sd <= 4; sd++) seeds.add((await client.completions.create({ ...sp, seed: sd })).choices[0].text);
    check(seeds.size > 1, 'different seeds differ', [...seeds]);

    // raw SSE framing of completions, usage chunk
    let resp = await fetch(A + '/v1/completions', { method: 'POST', headers: { ...auth, 'Content-Type': 'application/json' },
        body: JSON.stringify({ ...base, stream: true, stream_options: { include_usage: true } }), signal: AbortSignal.timeout(30000) });
    check(resp.status === 200 && (resp.headers.get('content-type') || '').startsWith('text/event-stream'), 'SSE content type');
    let ev = await sseEvents(resp);
    check(ev.framed && ev.events.at(-1) === '[DONE]', 'SSE events are "data: ...\\n\\n" ending with [DONE]', ev.events.slice(-2));
    const usageEv = ev.events.at(-2);
    check(usageEv?.choices?.length === 0 && usageEv?.usage?.completion_tokens === c1.usage.completion_tokens, 'usage chunk last (include_usage)', usageEv);
    check(ev.events.slice(0, -2).every((e) => e.usage === null && e.object === 'text_completion'), 'every other chunk has usage null');
    check(ev.events.at(-3)?.choices?.[0]?.finish_reason === c1.choices[0].finish_reason, 'finish_reason in the last choice chunk', ev.events.at(-3));

    // ---- chat ----
    const msgs = [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'The river' }];
    const ch = await client.chat.completions.create({ model: 'tiny', messages: msgs, max_tokens: 10, temperature: 0 });
    check(/^chatcmpl-/.test(ch.id) && ch.object === 'chat.completion' && ch.choices[0].message.role === 'assistant' &&
        typeof ch.choices[0].message.content === 'string' && ch.choices[0].logprobs === null, 'chat completion shape', ch);
    const cstream = await client.chat.completions.create({ model: 'tiny', messages: msgs, max_tokens: 10, temperature: 0, stream: true, stream_options: { include_usage: true } });
    const chunks = [];
    for await (const c of cstream) chunks.push(c);
    const content = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    check(chunks[0].object === 'chat.completion.chunk' && chunks[0].choices[0].delta.role === 'assistant', 'first chat chunk carries the role', chunks[0]);
    check(content === ch.choices[0].message.content, 'streamed chat equals non-streamed chat', [content, ch.choices[0].message.content]);
    check(chunks.at(-2).choices[0].finish_reason === ch.choices[0].finish_reason && chunks.at(-1).usage?.total_tokens === ch.usage.total_tokens,
        'chat finish_reason then the usage chunk', chunks.slice(-2));
    const parts = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'system', content: [{ type: 'text', text: 'You are terse.' }] }, msgs[1]], max_tokens: 10, temperature: 0 });
    check(parts.choices[0].message.content === ch.choices[0].message.content, 'content given as text parts', parts.choices[0].message);
    const nomax = await client.chat.completions.create({ model: 'tiny', messages: msgs, temperature: 0, max_completion_tokens: 3 });
    check(nomax.usage.completion_tokens <= 3, 'max_completion_tokens', nomax.usage);

    // ---- errors through the client ----
    await expectApiError(() => client.completions.create({ ...base, temperature: 'x' }), 400, 'temperature "x"', 'temperature');
    await expectApiError(() => client.completions.create({ ...base, max_tokens: -1 }), 400, 'max_tokens -1', 'max_tokens');
    await expectApiError(() => client.completions.create({ ...base, n: 2 }), 400, 'n 2', 'n');
    await expectApiError(() => client.completions.create({ ...base, top_p: 0 }), 400, 'top_p 0', 'top_p');
    await expectApiError(() => client.completions.create({ ...base, stop: ['a', 'b', 'c', 'd', 'e'] }), 400, 'five stop strings', 'stop');
    await expectApiError(() => client.completions.create({ ...base, prompt: ['a', 'b'] }), 400, 'two prompts', 'prompt');
    await expectApiError(() => client.completions.create({ ...base, echo: true }), 400, 'echo', 'echo');
    await expectApiError(() => client.completions.create({ ...base, prompt: Array(300).fill(ids[0]) }), 400, 'a prompt longer than the context', 'prompt', 'context_length_exceeded');
    await expectApiError(() => client.completions.create({ ...base, max_tokens: 1000 }), 400, 'prompt + max_tokens over the context', 'max_tokens', 'context_length_exceeded');
    await expectApiError(() => client.completions.create({ ...base, prompt: [1, 2, 99999] }), 400, 'a token id out of the vocabulary', 'prompt');
    await expectApiError(() => client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'river '.repeat(400) }] }), 400, 'chat longer than the context', 'messages', 'context_length_exceeded');
    try {
        const st = await client.completions.create({ ...base, stream: true, temperature: 7 });
        for await (const _ of st) { /* drain */ }
        check(false, 'streaming request with a bad field raises');
    } catch (e) { check(e instanceof OpenAI.APIError && e.status === 400, 'streaming request with a bad field: 400 before the stream', e?.message); }
    for (const m of [null, 'string', [], [123], [{}], [{ role: 123 }], [{ role: 'system', content: 123 }], [{ role: 'user', content: 'x' }, {}]])
        await expectRaw(A, '/v1/chat/completions', { body: { model: 'tiny', messages: m } }, 400, `messages ${JSON.stringify(m)}`, 'messages');

    // ---- raw HTTP errors ----
    await expectRaw(A, '/v1/completions', { body: '{"prompt": "x", ' }, 400, 'malformed JSON');
    r = await raw(A, '/v1/completions', { body: '{"prompt": ' });
    check(r.json?.error?.type === 'invalid_request_error', 'malformed JSON is an invalid_request_error', r.text);
    await expectRaw(A, '/v1/completions', { body: '' }, 400, 'empty body');
    await expectRaw(A, '/v1/completions', { body: '[1, 2]' }, 400, 'a JSON array body');
    await expectRaw(A, '/v1/completions', { body: '{"prompt": "x"} trailing' }, 400, 'trailing garbage');
    await expectRaw(A, '/v1/nope', { method: 'GET' }, 404, 'unknown route');
    r = await expectRaw(A, '/v1/completions', { method: 'GET' }, 405, 'GET on a POST route');
    check(r.headers.get('allow') === 'POST', '405 carries Allow: POST', r.headers.get('allow'));
    await expectRaw(A, '/health', { method: 'DELETE' }, 405, 'DELETE /health');
    const big = JSON.stringify({ prompt: 'x'.repeat(70000) });
    await expectRaw(A, '/v1/completions', { body: big }, 413, 'a body over --max-body');
    // the same without a Content-Length (chunked upload)
    try {
        const enc = new TextEncoder().encode(big);
        const bodyStream = new ReadableStream({ start(c) { for (let i = 0; i < enc.length; i += 8192) c.enqueue(enc.slice(i, i + 8192)); c.close(); } });
        const rr = await fetch(A + '/v1/completions', { method: 'POST', headers: { ...auth, 'Content-Type': 'application/json' }, body: bodyStream, duplex: 'half', signal: AbortSignal.timeout(30000) });
        const j = await rr.json();
        check(rr.status === 413 && isOpenAIError(j), 'a chunked body over --max-body is 413', rr.status);
    } catch (e) { check(false, 'chunked oversized body answered', e.message); }
    const u = new URL(A);
    const req = (len, body) => `POST /v1/completions HTTP/1.1\r\nHost: ${u.host}\r\nAuthorization: Bearer ${KEY}\r\nContent-Type: application/json\r\nContent-Length: ${len}\r\n\r\n${body}`;
    let x = await socketExchange(A, req(1000, '{"prompt": "The'));
    check(x.closed, 'a truncated body (client closes) is dropped', x);
    x = await socketExchange(A, req(1000, '{"prompt": "The'), { end: false, waitMs: 15000 });
    check(x.closed && x.ms < 14000, 'a truncated body (client stays) times out', x);
    x = await socketExchange(A, 'THIS IS NOT HTTP\r\n\r\n');
    check(x.closed, 'garbage gets a close', x);
    x = await socketExchange(A, req(12, '{"prompt": 1}'));
    check(/^HTTP\/1.1 400/.test(x.got), 'a complete raw request with a bad prompt type gets 400', x.got.slice(0, 80));
    r = await raw(A, '/health', { method: 'GET', key: false });
    check(r.status === 200, 'the server still answers after bad requests');

    // ---- 32 concurrent greedy streams == 32 sequential ones ----
    const reqs = [];
    for (let i = 0; i < 32; i++)
        reqs.push({ model: 'tiny', prompt: `The river ran past mill number ${(i % 6) + 1} and stone ${i}`, max_tokens: 12 + (i % 5) * 6, temperature: 0 });
    const seq = [];
    for (const q of reqs) seq.push(await streamText(client, q));
    const m0 = (await metrics(A, true)).m;
    const par = await Promise.all(reqs.map((q) => streamText(client, q)));
    const m1 = (await metrics(A, true)).m;
    let same = 0;
    for (let i = 0; i < 32; i++) {
        if (par[i].text === seq[i].text && par[i].finish === seq[i].finish) same++;
        else console.log(`  request ${i}: sequential ${JSON.stringify(seq[i])} concurrent ${JSON.stringify(par[i])}`);
    }
    check(same === 32, '32 concurrent greedy streams equal 32 sequential runs', `${same}/32`);
    check(seq.every((s) => s.text.length > 0), 'the sequential runs generated text');
    console.log(`  concurrent run: preemptions ${m1.spry_preemptions_total - m0.spry_preemptions_total}, ` +
        `prefix-cache hits ${m1.spry_prefix_cache_hits_total - m0.spry_prefix_cache_hits_total} of ${m1.spry_prefix_cache_queries_total - m0.spry_prefix_cache_queries_total} blocks, ` +
        `engine steps ${m1.spry_engine_steps_total - m0.spry_engine_steps_total}`);

    // ---- metrics ----
    const mt = await metrics(A, true);
    for (const name of ['spry_prompt_tokens_total', 'spry_generation_tokens_total', 'spry_requests_total', 'spry_num_requests_running',
        'spry_num_requests_waiting', 'spry_kv_cache_usage_ratio', 'spry_kv_blocks_used', 'spry_kv_blocks_total',
        'spry_time_to_first_token_seconds_count', 'spry_inter_token_latency_seconds_count', 'spry_time_to_first_token_seconds_bucket{le="+Inf"}'])
        check(name in mt.m && Number.isFinite(mt.m[name]), `/metrics has ${name}`);
    check(/# TYPE spry_time_to_first_token_seconds histogram/.test(mt.text), 'TTFT is a histogram');
    check(mt.m.spry_requests_total >= 32 + 32 && mt.m.spry_generation_tokens_total > 0, 'request and token counters move', mt.m.spry_requests_total);
    check(mt.m.spry_kv_blocks_used === 0 && mt.m.spry_requests_pending === 0, 'idle server holds no KV blocks', [mt.m.spry_kv_blocks_used, mt.m.spry_requests_pending]);
    check(mt.m['spry_http_responses_total{code="413"}'] >= 1 && mt.m['spry_http_responses_total{code="401"}'] >= 1, 'responses counted by status');

    // ---- server B: full queue -> 503, disconnects cancel and free KV blocks ----
    const b0 = (await metrics(B)).m;
    const ctrls = [], readers = [];
    for (let i = 0; i < 2; i++) {
        const ac = new AbortController();
        ctrls.push(ac);
        const rs = await fetch(B + '/v1/completions', { method: 'POST', headers: { 'Content-Type': 'application/json' }, signal: ac.signal,
            body: JSON.stringify({ prompt: 'The river', max_tokens: 1000, temperature: 0, stream: true }) });
        const rd = rs.body.getReader();
        let n = 0;
        while (n < 3) { const { value } = await rd.read(); n += (new TextDecoder().decode(value).match(/data: /g) || []).length; }
        readers.push(rd);
    }
    const bm = (await metrics(B)).m;
    check(bm.spry_kv_blocks_used > 0 && bm.spry_requests_pending === 2, 'two long streams hold KV blocks', [bm.spry_kv_blocks_used, bm.spry_requests_pending]);
    r = await raw(B, '/v1/completions', { body: { prompt: 'x', max_tokens: 2 }, key: false });
    check(r.status === 503 && isOpenAIError(r.json) && r.headers.get('retry-after') === '1', 'a full queue answers 503 with Retry-After', { status: r.status, body: r.text });
    const bclient = new OpenAI({ baseURL: `${B}/v1`, apiKey: 'none', maxRetries: 0 });
    await expectApiError(() => bclient.completions.create({ model: 'b', prompt: 'x', max_tokens: 2 }), 503, 'client sees 503 when full');
    for (const ac of ctrls) ac.abort();
    let freed = null;
    for (let t = 0; t < 100; t++) {
        const mm = (await metrics(B)).m;
        if (mm.spry_kv_blocks_used === 0 && mm.spry_requests_pending === 0 && mm.spry_num_requests_running === 0) { freed = mm; break; }
        await sleep(100);
    }
    check(freed !== null, 'disconnected streams free their KV blocks (metrics)');
    if (freed) {
        const dc = freed['spry_requests_finished_total{reason="cancelled"}'] - b0['spry_requests_finished_total{reason="cancelled"}'];
        check(dc === 2, 'both disconnected streams were cancelled, not finished', dc);
        check(freed['spry_requests_finished_total{reason="length"}'] === b0['spry_requests_finished_total{reason="length"}'], 'no stream ran to its end');
        check(freed.spry_kv_cache_usage_ratio === 0, 'KV usage ratio back to 0', freed.spry_kv_cache_usage_ratio);
    }
    r = await raw(B, '/v1/completions', { body: { prompt: 'The river', max_tokens: 4, temperature: 0 }, key: false });
    check(r.status === 200 && r.json?.usage?.completion_tokens >= 1, 'the server answers after the disconnects', r.text);
    // a non-streaming client that leaves is cancelled as well
    const ac = new AbortController();
    const pending = fetch(B + '/v1/completions', { method: 'POST', headers: { 'Content-Type': 'application/json' }, signal: ac.signal,
        body: JSON.stringify({ prompt: 'The river', max_tokens: 1000, temperature: 0 }) }).catch(() => null);
    await sleep(100);
    ac.abort();
    await pending;
    let ok = false;
    for (let t = 0; t < 100 && !ok; t++) {
        const mm = (await metrics(B)).m;
        ok = mm.spry_kv_blocks_used === 0 && mm.spry_requests_pending === 0 &&
            mm['spry_requests_finished_total{reason="cancelled"}'] === b0['spry_requests_finished_total{reason="cancelled"}'] + 3;
        if (!ok) await sleep(100);
    }
    check(ok, 'a non-streaming client that disconnects is cancelled and its blocks freed');

    console.log(`${pass} passed, ${fail} failed`);
    process.exit(fail ? 1 : 0);
}

main().catch((e) => {
    console.log(`FAIL: uncaught ${e?.stack || e}`);
    console.log(`${pass} passed, ${fail + 1} failed`);
    process.exit(1);
});
