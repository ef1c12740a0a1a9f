/*
 * The neighbour sum of the channel-wise ("uvu") tensor-product messages, forward and backward,
 * in one pass over the edges: the CPU kernel of equiglass.nn.message_sum (read its docstring
 * first). No per-edge message is ever stored: each centre's sums stay in cache while its
 * edges are visited, which is what makes it fast (the step is bound by memory traffic).
 *
 * Layouts (row-major; a "block" is one irrep of multiplicity mul and dimension d = 2l + 1,
 * stored [d][mul], the channel index u contiguous so that the inner loops are SIMD vectors):
 *   x         [N][in_dim]            node features, blocks at the paths' in_offset
 *   weights   [E][weight_dim]        per-edge path weights, path p's mul values at weight_offset
 *   coupling  [E][d_in][d_out]       per-edge Clebsch-Gordan couplings C_e (one array per triple)
 *   out       [N][out_dim]           sums, blocks at the paths' out_offset, one block per path
 * and for every path p, edge e = (source s -> centre n), channel u, output component k:
 *   out[n][k][u] += path_weight * w[e][u] * sum_i C_e[i][k] x[s][i][u].
 *
 * Edges are visited by centre, in both passes, through an ordering (order[q], q in ptr[n] ..
 * ptr[n+1]), so that the per-edge arrays are read in order and every thread writes only its own
 * centres' rows and its own edges' gradients. The gradient of x, summed at the sources, is
 * summed in one array per thread, added up at the end: no atomics, and results that depend on
 * the number of threads only through that last sum's rounding.
 *
 * Each function exists for float and double (the macro at the end); all return 0, or -1 when
 * memory for a thread could not be had.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A path's integers, in this order, in the int64 array `paths` [n_paths][PATH_FIELDS]. */
enum { IN_OFFSET, D_IN, COUPLING, OUT_OFFSET, D_OUT, WEIGHT_OFFSET, MUL, PATH_FIELDS };

#define MAX_THREADS 256

/* Where thread t of n_threads starts (t = n_threads: n_nodes): equal numbers of edges, by bisection of ptr. */
static int64_t split_point(const int64_t *ptr, int64_t n_nodes, int t, int n_threads) {
    if (t == n_threads) return n_nodes; /* the last thread also takes the nodes without edges at the end */
    int64_t goal = ptr[n_nodes] * t / n_threads, lo = 0, hi = n_nodes;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (ptr[mid] < goal) lo = mid + 1; else hi = mid;
    }
    return lo;
}

typedef struct {
    void *args;
    int64_t first, last;
    void *grad_x;  /* the backward's sums of this thread's grad_x */
    int status;
} Range;

/* Split the nodes of ptr among n_threads ranges (n_threads clipped to [1, MAX_THREADS]); returns it. */
static int split_ranges(Range *ranges, void *args, const int64_t *ptr, int64_t n_nodes, int n_threads) {
    if (n_threads < 1) n_threads = 1;
    if (n_threads > MAX_THREADS) n_threads = MAX_THREADS;
    for (int t = 0; t < n_threads; ++t)
        ranges[t] = (Range){args, split_point(ptr, n_nodes, t, n_threads), split_point(ptr, n_nodes, t + 1, n_threads), NULL, 0};
    return n_threads;
}

/* Run body on every range, one thread each (the caller's thread takes the first); 0, or -1 if any failed. */
static int run_ranges(void *(*body)(void *), Range *ranges, int n_threads) {
    pthread_t threads[MAX_THREADS];
    int started[MAX_THREADS];
    for (int t = 1; t < n_threads; ++t) started[t] = pthread_create(&threads[t], NULL, body, &ranges[t]) == 0;
    body(&ranges[0]);
    for (int t = 1; t < n_threads; ++t) {
        if (started[t]) pthread_join(threads[t], NULL);
        else body(&ranges[t]); /* no thread to be had: do its share here */
    }
    int status = 0;
    for (int t = 0; t < n_threads; ++t) status |= ranges[t].status;
    return status;
}

#define DEFINE_MESSAGE_SUM(scalar, suffix)                                                                      \
                                                                                                                \
typedef struct {                                                                                                \
    const scalar *x, *weights, *const *couplings;                                                               \
    const scalar *grad_out;                                                                                     \
    scalar *out, *grad_x, *grad_weights, *const *grad_couplings;                                                \
    const int64_t *ptr, *order, *other_end, *paths;                                                             \
    const double *path_weights;                                                                                 \
    int64_t n_paths, in_dim, out_dim, weight_dim, scratch;                                                      \
} Arguments_##suffix;                                                                                           \
                                                                                                                \
/* Forward, nodes [first, last) as centres: out[n] = sum over edges (s -> n). */                               \
static void *forward_range_##suffix(void *range_) {                                                             \
    Range *range = range_;                                                                                      \
    const Arguments_##suffix *a = range->args;                                                                  \
    scalar *restrict wx = malloc(sizeof(scalar) * a->scratch);  /* w[u] x[s][i][u] of one path */               \
    if (!wx) { range->status = -1; return NULL; }                                                               \
    for (int64_t n = range->first; n < range->last; ++n) {                                                      \
        scalar *out = a->out + n * a->out_dim;                                                                  \
        memset(out, 0, sizeof(scalar) * a->out_dim);                                                            \
        for (int64_t q = a->ptr[n]; q < a->ptr[n + 1]; ++q) {                                                   \
            const int64_t e = a->order ? a->order[q] : q;                                                       \
            const scalar *x = a->x + a->other_end[e] * a->in_dim, *w = a->weights + e * a->weight_dim;          \
            for (int64_t p = 0; p < a->n_paths; ++p) {                                                          \
                const int64_t *path = a->paths + p * PATH_FIELDS;                                               \
                const int64_t d_in = path[D_IN], d_out = path[D_OUT], mul = path[MUL];                          \
                const scalar *restrict xp = x + path[IN_OFFSET], *restrict wp = w + path[WEIGHT_OFFSET];        \
                const scalar *restrict c = a->couplings[path[COUPLING]] + e * d_in * d_out;                     \
                scalar *restrict op = out + path[OUT_OFFSET];                                                   \
                const scalar pw = (scalar)a->path_weights[p];                                                   \
                for (int64_t i = 0; i < d_in; ++i)                                                              \
                    for (int64_t u = 0; u < mul; ++u) wx[i * mul + u] = pw * wp[u] * xp[i * mul + u];           \
                for (int64_t i = 0; i < d_in; ++i)                                                              \
                    for (int64_t k = 0; k < d_out; ++k) {                                                       \
                        const scalar cik = c[i * d_out + k];                                                    \
                        for (int64_t u = 0; u < mul; ++u) op[k * mul + u] += cik * wx[i * mul + u];             \
                    }                                                                                           \
            }                                                                                                   \
        }                                                                                                       \
    }                                                                                                           \
    free(wx);                                                                                                   \
    return NULL;                                                                                                \
}                                                                                                               \
                                                                                                                \
/* Backward, nodes [first, last) as centres, edges as in the forward: each edge's own                      \
   grad_weights[e] and grad_couplings[.][e], and grad_x of its source summed into this thread's                 \
   range->grad_x (grad_x, grad_weights, grad_couplings: NULL where not wanted). */                              \
static void *backward_range_##suffix(void *range_) {                                                            \
    Range *range = range_;                                                                                      \
    const Arguments_##suffix *a = range->args;                                                                  \
    scalar *const h = malloc(sizeof(scalar) * 2 * a->scratch);  /* sum_k C[i][k] g[k][u] */                  \
    if (!h) { range->status = -1; return NULL; }                                                                \
    scalar *const gw = h + a->scratch;  /* sum_i x[i][u] h[i][u] */                                             \
    scalar *const grad_x = range->grad_x;                                                                   \
    for (int64_t n = range->first; n < range->last; ++n) {                                                      \
        const scalar *const g = a->grad_out + n * a->out_dim;                                                   \
        for (int64_t q = a->ptr[n]; q < a->ptr[n + 1]; ++q) {                                                   \
            const int64_t e = a->order ? a->order[q] : q, s = a->other_end[e];                                  \
            const scalar *const x = a->x + s * a->in_dim, *const w = a->weights + e * a->weight_dim;            \
            for (int64_t p = 0; p < a->n_paths; ++p) {                                                          \
                const int64_t *path = a->paths + p * PATH_FIELDS;                                               \
                const int64_t d_in = path[D_IN], d_out = path[D_OUT], mul = path[MUL];                          \
                const scalar *restrict xp = x + path[IN_OFFSET], *restrict wp = w + path[WEIGHT_OFFSET];        \
                const scalar *restrict gp = g + path[OUT_OFFSET];                                               \
                const scalar *restrict c = a->couplings[path[COUPLING]] + e * d_in * d_out;                     \
                const scalar pw = (scalar)a->path_weights[p];                                                   \
                for (int64_t i = 0; i < d_in; ++i) {                                                            \
                    scalar *restrict hi = h + i * mul;                                                          \
                    for (int64_t u = 0; u < mul; ++u) hi[u] = 0;                                                \
                    for (int64_t k = 0; k < d_out; ++k) {                                                       \
                        const scalar cik = c[i * d_out + k];                                                    \
                        for (int64_t u = 0; u < mul; ++u) hi[u] += cik * gp[k * mul + u];                       \
                    }                                                                                           \
                }                                                                                               \
                if (grad_x) {                                                                                   \
                    scalar *restrict gx = grad_x + s * a->in_dim + path[IN_OFFSET];                             \
                    for (int64_t i = 0; i < d_in; ++i)                                                          \
                        for (int64_t u = 0; u < mul; ++u) gx[i * mul + u] += pw * wp[u] * h[i * mul + u];       \
                }                                                                                               \
                if (a->grad_weights) {                                                                          \
                    scalar *restrict gwe = a->grad_weights + e * a->weight_dim + path[WEIGHT_OFFSET];           \
                    for (int64_t u = 0; u < mul; ++u) gw[u] = 0;                                                \
                    for (int64_t i = 0; i < d_in; ++i)                                                          \
                        for (int64_t u = 0; u < mul; ++u) gw[u] += xp[i * mul + u] * h[i * mul + u];            \
                    for (int64_t u = 0; u < mul; ++u) gwe[u] = pw * gw[u];                                      \
                }                                                                                               \
                if (a->grad_couplings && a->grad_couplings[path[COUPLING]]) {                                   \
                    scalar *restrict gc = a->grad_couplings[path[COUPLING]] + e * d_in * d_out;                 \
                    for (int64_t i = 0; i < d_in; ++i)                                                          \
                        for (int64_t k = 0; k < d_out; ++k) {                                                   \
                            scalar sum = 0;                                                                     \
                            for (int64_t u = 0; u < mul; ++u) sum += wp[u] * gp[k * mul + u] * xp[i * mul + u]; \
                            gc[i * d_out + k] += pw * sum;                                                      \
                        }                                                                                       \
                }                                                                                               \
            }                                                                                                   \
        }                                                                                                       \
    }                                                                                                           \
    free(h);                                                                                                    \
    return NULL;                                                                                                \
}                                                                                                               \
                                                                                                                \
/* out [n_nodes][out_dim] from x, weights and couplings; edges of centre n: order[ptr[n] .. ptr[n+1]]          \
   (order NULL: the identity), source[e] their sources. */                                                      \
int message_sum_forward_##suffix(                                                                               \
    const scalar *x, const scalar *weights, const scalar *const *couplings, scalar *out,                       \
    const int64_t *ptr, const int64_t *order, const int64_t *source, int64_t n_nodes,                          \
    const int64_t *paths, const double *path_weights, int64_t n_paths,                                         \
    int64_t in_dim, int64_t out_dim, int64_t weight_dim, int64_t scratch, int n_threads) {                     \
    Arguments_##suffix args = {x, weights, couplings, NULL, out, NULL, NULL, NULL, ptr, order, source, paths,  \
                               path_weights, n_paths, in_dim, out_dim, weight_dim, scratch};                   \
    Range ranges[MAX_THREADS];                                                                                 \
    n_threads = split_ranges(ranges, &args, ptr, n_nodes, n_threads);                                          \
    return run_ranges(forward_range_##suffix, ranges, n_threads);                                              \
}                                                                                                               \
                                                                                                                \
/* grad_x [n_nodes][in_dim] (or NULL; zero-filled by the caller, summed into), grad_weights [E][weight_dim]  \
   (or NULL) and grad_couplings (NULL, or one array or NULL per coupling, zero-filled by the caller)             \
   from grad_out; edges, order and source as in the forward. */                                                 \
int message_sum_backward_##suffix(                                                                              \
    const scalar *x, const scalar *weights, const scalar *const *couplings, const scalar *grad_out,            \
    scalar *grad_x, scalar *grad_weights, scalar *const *grad_couplings,                                       \
    const int64_t *ptr, const int64_t *order, const int64_t *source, int64_t n_nodes,                          \
    const int64_t *paths, const double *path_weights, int64_t n_paths,                                         \
    int64_t in_dim, int64_t out_dim, int64_t weight_dim, int64_t scratch, int n_threads) {                     \
    Arguments_##suffix args = {x, weights, couplings, grad_out, NULL, NULL, grad_weights, grad_couplings,      \
                               ptr, order, source, paths, path_weights, n_paths, in_dim, out_dim, weight_dim,  \
                               scratch};                                                                       \
    Range ranges[MAX_THREADS];                                                                                 \
    n_threads = split_ranges(ranges, &args, ptr, n_nodes, n_threads);                                          \
    const int64_t size = n_nodes * in_dim;                                                                     \
    int status = 0;                                                                                            \
    for (int t = 0; t < n_threads && grad_x; ++t) {  /* the first thread sums into grad_x itself */           \
        ranges[t].grad_x = t ? calloc(size, sizeof(scalar)) : grad_x;                                          \
        if (!ranges[t].grad_x) status = -1;                                                                    \
    }                                                                                                          \
    if (!status) status = run_ranges(backward_range_##suffix, ranges, n_threads);                              \
    for (int t = 1; t < n_threads && grad_x; ++t) {                                                            \
        scalar *partial = ranges[t].grad_x;                                                                    \
        if (partial && !status)                                                                                \
            for (int64_t j = 0; j < size; ++j) grad_x[j] += partial[j];                                        \
        free(partial);                                                                                         \
    }                                                                                                          \
    return status;                                                                                             \
}

DEFINE_MESSAGE_SUM(float, float32)
DEFINE_MESSAGE_SUM(double, float64)
