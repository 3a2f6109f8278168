#!/usr/bin/env bash
# infer.sh BUILD -- inference speed, spry's serving engine vs PyTorch (Debian python3-torch), GPT-2
# 124M shapes with random weights, batch 1, 2 threads, in one invocation (llama-bench's names):
#   pp256: prompt processing, tokens/s of one 256-token prefill (logits of the last token only);
#   tg128: generation, tokens/s of 128 greedy tokens after a 1-token prompt (KV cache on both sides).
# spry runs each weight format (f32, bf16, f16, q8_0, q4_0; bench_infer); PyTorch runs fp32 and
# bf16 with a KV cache (bench/infer_pytorch.py). Each format is compared with the nearest
# PyTorch precision (f32 -> fp32, everything else -> bf16), and decode also with its bandwidth
# bound: the machine's read bandwidth (measured by bench_infer in the same run) divided by the
# bytes of weights a token reads. Ends each figure with
#   RESULT pp256_gpt2_124m_<fmt> spry=<tok/s> pytorch=<tok/s> ratio=<spry/pytorch> unit=tokens/s
#   RESULT tg128_gpt2_124m_<fmt> spry=<tok/s> pytorch=<tok/s> ratio=... unit=tokens/s
#   RESULT tg128_gpt2_124m_<fmt> spry=<tok/s> bound=<tok/s> ratio=<share of the bound> unit=tokens/s
set -euo pipefail
BUILD=${1:-build}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (other work may share it)"
declare -A PP TG
for prec in fp32 bf16; do
    line=$(OMP_WAIT_POLICY=passive /usr/bin/python3 bench/infer_pytorch.py --model gpt2-124m --precision $prec \
           --threads 2 --pp 256 --tg 128)
    echo "$line"
    PP[$prec]=$(echo "$line" | field pp256_tokens_per_s); TG[$prec]=$(echo "$line" | field tg128_tokens_per_s)
done
for fmt in f32 bf16 f16 q8_0 q4_0; do
    line=$(OMP_WAIT_POLICY=active "$BUILD/bench_infer" --format $fmt --pp 256 --tg 128 --threads 2)
    echo "$line"
    pp=$(echo "$line" | field pp256_tokens_per_s); tg=$(echo "$line" | field tg128_tokens_per_s)
    bound=$(echo "$line" | field tg_bound_tokens_per_s)
    base=bf16; [ $fmt = f32 ] && base=fp32
    r() { awk "BEGIN{printf \"%.3f\", $1/$2}"; }
    echo "RESULT pp256_gpt2_124m_$fmt spry=$pp pytorch=${PP[$base]} ratio=$(r $pp ${PP[$base]}) unit=tokens/s (pytorch $base)"
    echo "RESULT tg128_gpt2_124m_$fmt spry=$tg pytorch=${TG[$base]} ratio=$(r $tg ${TG[$base]}) unit=tokens/s (pytorch $base)"
    echo "RESULT tg128_gpt2_124m_$fmt spry=$tg bound=$bound ratio=$(r $tg $bound) unit=tokens/s"
done
