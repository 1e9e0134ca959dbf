// zbmd's nine standard kernels in CUDA C, compiled at run time by NVRTC
// (gpu/src/cuda/compile.rs). Names, argument lists and launch shapes are
// those of gpu/src/kernel.rs: buffers first (float*), then scalars.
//
// One-dimensional kernels use grid-stride loops, so any grid covers any n.
// The reductions (sum, max) run as one block and softmax as one block per
// row; all three are written for blockDim.x == ZBMD_BLOCK (a power of two):
// each thread folds a strided slice, then a shared-memory tree halves the
// partial results. GEMM computes one element of c per thread from
// ZBMD_TILE x ZBMD_TILE tiles of a and b staged in shared memory.
//
// Indices are size_t: a row-major offset row * k can pass 2^32 even when
// m, n and k each fit in 32 bits.

#define ZBMD_BLOCK 256
#define ZBMD_TILE 16

// -infinity without math.h (NVRTC does not include it by default).
#define ZBMD_NEG_INF __int_as_float(0xff800000)

extern "C" __global__ void zbmd_empty(unsigned int n) {
    (void)n;
}

extern "C" __global__ void zbmd_vector_add(const float* a, const float* b, float* out,
                                           unsigned int n) {
    size_t stride = (size_t)blockDim.x * gridDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        out[i] = a[i] + b[i];
    }
}

extern "C" __global__ void zbmd_scale(const float* x, float* out, float alpha, unsigned int n) {
    size_t stride = (size_t)blockDim.x * gridDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        out[i] = alpha * x[i];
    }
}

extern "C" __global__ void zbmd_relu(const float* x, float* out, unsigned int n) {
    size_t stride = (size_t)blockDim.x * gridDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float v = x[i];
        out[i] = v > 0.0f ? v : 0.0f;
    }
}

extern "C" __global__ void zbmd_relu_grad(const float* x, const float* grad, float* out,
                                          unsigned int n) {
    size_t stride = (size_t)blockDim.x * gridDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        out[i] = x[i] > 0.0f ? grad[i] : 0.0f;
    }
}

// Tree-reduces `partial[0..blockDim.x]` in place with `op`; the result is in
// partial[0] for every thread once this returns.
#define ZBMD_BLOCK_REDUCE(partial, op)                                       \
    do {                                                                     \
        __syncthreads();                                                     \
        for (unsigned int half = blockDim.x / 2; half > 0; half /= 2) {      \
            if (threadIdx.x < half) {                                        \
                partial[threadIdx.x] =                                       \
                    op(partial[threadIdx.x], partial[threadIdx.x + half]);   \
            }                                                                \
            __syncthreads();                                                 \
        }                                                                    \
    } while (0)

#define ZBMD_ADD(a, b) ((a) + (b))

extern "C" __global__ void zbmd_sum(const float* x, float* out, unsigned int n) {
    __shared__ float partial[ZBMD_BLOCK];
    float acc = 0.0f;
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) {
        acc += x[i];
    }
    partial[threadIdx.x] = acc;
    ZBMD_BLOCK_REDUCE(partial, ZBMD_ADD);
    if (threadIdx.x == 0) {
        out[0] = partial[0];
    }
}

extern "C" __global__ void zbmd_max(const float* x, float* out, unsigned int n) {
    __shared__ float partial[ZBMD_BLOCK];
    float acc = ZBMD_NEG_INF;
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) {
        acc = fmaxf(acc, x[i]);
    }
    partial[threadIdx.x] = acc;
    ZBMD_BLOCK_REDUCE(partial, fmaxf);
    if (threadIdx.x == 0) {
        out[0] = partial[0];
    }
}

// Numerically stable: subtracts the row's maximum before exponentiating, so
// no exp overflows and the largest term is exactly 1.
extern "C" __global__ void zbmd_softmax(const float* x, float* out, unsigned int rows,
                                        unsigned int cols) {
    __shared__ float partial[ZBMD_BLOCK];
    size_t row = blockIdx.x;
    if (row >= rows) {
        return;  // the whole block leaves together: no barrier is skipped
    }
    const float* in_row = x + row * cols;
    float* out_row = out + row * cols;

    float row_max = ZBMD_NEG_INF;
    for (size_t j = threadIdx.x; j < cols; j += blockDim.x) {
        row_max = fmaxf(row_max, in_row[j]);
    }
    partial[threadIdx.x] = row_max;
    ZBMD_BLOCK_REDUCE(partial, fmaxf);
    row_max = partial[0];
    __syncthreads();  // everyone has read partial[0] before it is reused

    float total = 0.0f;
    for (size_t j = threadIdx.x; j < cols; j += blockDim.x) {
        total += expf(in_row[j] - row_max);
    }
    partial[threadIdx.x] = total;
    ZBMD_BLOCK_REDUCE(partial, ZBMD_ADD);
    float inv_total = 1.0f / partial[0];

    for (size_t j = threadIdx.x; j < cols; j += blockDim.x) {
        out_row[j] = expf(in_row[j] - row_max) * inv_total;
    }
}

// c = alpha * a . b + beta * c; a is m x k, b is k x n, c is m x n, all
// row-major. Block (ZBMD_TILE, ZBMD_TILE), grid (ceil(n/16), ceil(m/16)).
// beta == 0 never reads c, so c may start as anything (NaN included).
extern "C" __global__ void zbmd_gemm(const float* a, const float* b, float* c, unsigned int m,
                                     unsigned int n, unsigned int k, float alpha, float beta) {
    __shared__ float a_tile[ZBMD_TILE][ZBMD_TILE];
    __shared__ float b_tile[ZBMD_TILE][ZBMD_TILE];
    unsigned int tx = threadIdx.x;
    unsigned int ty = threadIdx.y;
    size_t row = (size_t)blockIdx.y * ZBMD_TILE + ty;
    size_t col = (size_t)blockIdx.x * ZBMD_TILE + tx;

    float acc = 0.0f;
    for (size_t base = 0; base < k; base += ZBMD_TILE) {
        size_t a_col = base + tx;
        size_t b_row = base + ty;
        a_tile[ty][tx] = (row < m && a_col < k) ? a[row * k + a_col] : 0.0f;
        b_tile[ty][tx] = (b_row < k && col < n) ? b[b_row * n + col] : 0.0f;
        __syncthreads();
        for (unsigned int e = 0; e < ZBMD_TILE; ++e) {
            acc += a_tile[ty][e] * b_tile[e][tx];
        }
        __syncthreads();
    }
    if (row < m && col < n) {
        size_t at = row * n + col;
        c[at] = beta == 0.0f ? alpha * acc : alpha * acc + beta * c[at];
    }
}
