// The HIP prelude of zbmd's standard kernels. gpu/src/rocm/mod.rs
// (STANDARD_SOURCE) puts it in front of kernels/cuda/standard.cu and hiprtc
// compiles the two as one text: the ROCm backend runs the CUDA kernels'
// own source, so the two cannot drift apart.
//
// hiprtc provides the HIP device runtime without an #include, and HIP
// spells every CUDA name that standard.cu uses the same way:
//
// HIP-SAME: __global__ __shared__ __syncthreads threadIdx blockIdx blockDim gridDim
// HIP-SAME: expf fmaxf __int_as_float
//
// A CUDA name that HIP spells differently would be mapped here with a
// #define (none is, today); one that HIP lacks must not appear in
// standard.cu. gpu/src/rocm/tests.rs checks both: every CUDA-specific name
// in standard.cu is on a HIP-SAME line or defined here, and every name on
// those lines is used there.
//
// For kernel authors: AMD's wavefront is 64 lanes, a CUDA warp 32; the
// kernels assume neither (ZBMD_BLOCK, 256, is a multiple of both), and
// `__shared__` memory is AMD's LDS.

// Compiler messages point into standard.cu, from its first line.
#line 1 "standard.cu"
