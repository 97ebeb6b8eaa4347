// Router scoring + top-k selection, one thread per token: the CUDA twin of routing.rs's `route`.
//
// The arithmetic mirrors the CPU reference operation by operation (softmax as exp(x - max) / sum,
// ranking descending with ties to the lower index and NaN last, DeepSeek-V3's +1e-20, PhiMoE's
// sparsemixer), so the captured ids are identical and the weights agree to float rounding.
// One thread per token is enough: a router row is at most a few hundred experts, and at decode
// there is one token; what matters is that the result stays on the device.
//
// Output row per token (2k + 1 floats): k expert ids (exact as f32 below 2^24), k weights,
// the selection margin.
#include <stdint.h>
#include <math.h>

#define MAX_EXPERTS 512

__device__ __forceinline__ bool ranks_before(float x, int i, float y, int j) {
    bool xn = isnan(x), yn = isnan(y);
    if (xn || yn) {
        if (xn && yn) return i < j;
        return yn;
    }
    if (x != y) return x > y;
    return i < j;
}

// The best entry of v[0..n) not yet taken, or -1.
__device__ int best_untaken(const float* v, const bool* taken, int n) {
    int b = -1;
    for (int i = 0; i < n; ++i) {
        if (taken[i]) continue;
        if (b < 0 || ranks_before(v[i], i, v[b], b)) b = i;
    }
    return b;
}

// aux: [3, E] f32 = correction bias, excluded (!= 0), dropped (!= 0).
extern "C" __global__ void router_topk_f32(
    const float* __restrict__ logits, const float* __restrict__ aux, float* __restrict__ out,
    int tokens, int n_exp, int k, int scoring, int has_bias, int selection, int groups, int top_groups,
    int group_score, float jitter_eps, int norm, float pnorm, float scaling)
{
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= tokens || n_exp > MAX_EXPERTS) return;
    const float* row = logits + (size_t)t * n_exp;
    const float* bias = aux;
    const float* excluded = aux + n_exp;
    const float* dropped = aux + 2 * n_exp;
    float* o = out + (size_t)t * (2 * k + 1);
    float scores[MAX_EXPERTS];
    float choice[MAX_EXPERTS];
    bool taken[MAX_EXPERTS];

    if (selection == 2) {
        // PhiMoE sparsemixer (inference): two rounds over the raw logits.
        for (int i = 0; i < n_exp; ++i) taken[i] = excluded[i] != 0.0f;
        float best[2];
        int picks[2];
        for (int round = 0; round < 2; ++round) {
            for (int i = 0; i < n_exp; ++i) choice[i] = taken[i] ? -INFINITY : row[i];
            int pick = -1;
            for (int i = 0; i < n_exp; ++i)
                if (pick < 0 || ranks_before(choice[i], i, choice[pick], pick)) pick = i;
            float top = row[pick];
            float mx = -INFINITY;
            for (int i = 0; i < n_exp; ++i) {
                float s = row[i];
                bool kept = !taken[i] && !((top - s) / fmaxf(fabsf(s), top) > 2.0f * jitter_eps);
                if (kept) mx = fmaxf(mx, s);
            }
            float sum = 0.0f;
            for (int i = 0; i < n_exp; ++i) {
                float s = row[i];
                bool kept = !taken[i] && !((top - s) / fmaxf(fabsf(s), top) > 2.0f * jitter_eps);
                if (kept) sum += expf(s - mx);
            }
            float w = expf(top - mx) / sum;
            if (dropped[pick] != 0.0f) w = 0.0f;
            o[round] = (float)pick;
            o[k + round] = w;
            picks[round] = pick;
            best[round] = top;
            taken[pick] = true;
        }
        float third = -INFINITY;
        for (int i = 0; i < n_exp; ++i)
            if (excluded[i] == 0.0f && i != picks[0] && i != picks[1]) third = fmaxf(third, row[i]);
        o[2 * k] = fminf(best[0] - best[1], best[1] - third);
        return;
    }

    // Scores: what the combine weights are gathered from.
    if (scoring == 0) {
        float mx = -INFINITY;
        for (int i = 0; i < n_exp; ++i)
            if (excluded[i] == 0.0f) mx = fmaxf(mx, row[i]);
        float sum = 0.0f;
        for (int i = 0; i < n_exp; ++i) {
            scores[i] = excluded[i] != 0.0f ? 0.0f : expf(row[i] - mx);
            sum += scores[i];
        }
        for (int i = 0; i < n_exp; ++i) scores[i] /= sum;
    } else {
        for (int i = 0; i < n_exp; ++i) scores[i] = 1.0f / (1.0f + expf(-row[i]));
    }
    // Choice scores: what selection ranks (bias-corrected for sigmoid routers).
    for (int i = 0; i < n_exp; ++i) {
        float b = (scoring == 1 && has_bias) ? bias[i] : 0.0f;
        choice[i] = excluded[i] != 0.0f ? -INFINITY : scores[i] + b;
    }
    float group_margin = INFINITY;
    if (selection == 1) {
        // Group-limited: only the experts of the top_groups strongest groups stay eligible.
        int per = n_exp / groups;
        float strength[MAX_EXPERTS];
        bool gtaken[MAX_EXPERTS];
        for (int g = 0; g < groups; ++g) {
            for (int i = 0; i < per; ++i) taken[i] = false;
            int a = best_untaken(choice + g * per, taken, per);
            float s = choice[g * per + a];
            if (group_score == 1 && per > 1) {
                taken[a] = true;
                int b = best_untaken(choice + g * per, taken, per);
                s += choice[g * per + b];
            }
            strength[g] = s;
            gtaken[g] = false;
        }
        int weakest = -1;
        for (int r = 0; r < top_groups; ++r) {
            weakest = best_untaken(strength, gtaken, groups);
            gtaken[weakest] = true;
        }
        int dropped_best = best_untaken(strength, gtaken, groups);
        group_margin = dropped_best < 0 ? INFINITY : strength[weakest] - strength[dropped_best];
        for (int g = 0; g < groups; ++g)
            if (!gtaken[g])
                for (int i = 0; i < per; ++i) choice[g * per + i] = -INFINITY;
    }
    for (int i = 0; i < n_exp; ++i) taken[i] = false;
    int last = -1;
    float wsum = 0.0f, wp = 0.0f;
    for (int r = 0; r < k; ++r) {
        int e = best_untaken(choice, taken, n_exp);
        taken[e] = true;
        last = e;
        o[r] = (float)e;
        o[k + r] = scores[e];
        wsum += scores[e];
        wp += powf(fabsf(scores[e]), pnorm);
    }
    int next = best_untaken(choice, taken, n_exp);
    // The smaller of the expert gap and (group-limited) the group gap, as routing.rs.
    o[2 * k] = fminf(next < 0 ? INFINITY : choice[last] - choice[next], group_margin);
    float denom = 1.0f;
    if (norm == 1) denom = wsum + 1e-20f;
    else if (norm == 2) denom = powf(wp, 1.0f / pnorm);
    for (int r = 0; r < k; ++r) {
        float w = o[k + r];
        if (norm != 0) w /= denom;
        if (scaling != 1.0f) w *= scaling;
        if (dropped[(int)o[r]] != 0.0f) w = 0.0f;
        o[k + r] = w;
    }
}
