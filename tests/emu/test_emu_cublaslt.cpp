// test_emu_cublaslt.cpp: the CPU emulator's cuBLASLt (dev/cuda/emu/include/cublasLt.h), checked against a
// double-precision reference computed here with a plain triple loop: every transpose combination, non-square
// shapes, ld > rows, beta 0 and 1, every emulated epilogue in fp32 and bf16, bit-identical results for 1, 2
// and 3 threads, and the status codes of the refusals. Cases that must stop the program (pointers outside the
// emulated device memory) run in a child process. Tolerances:
//   fp32: |D - ref| <= 1e-5 max|ref|. The emulator sums k <= 100 products of |values| <= 1 in fp32, so the
//         error is at most k 2^-24 sum|a b| (<= 100 * 6e-8 * 25 = 1.5e-4 in the worst case, ~1e-6 typical),
//         against max|ref| of about 10 here; the observed error is printed next to the bound.
//   bf16: |D - bf16(ref)| <= 2 ulp_bf16(ref) + 1e-5 max|ref|. The fp32 result and the exact one can round to
//         neighbouring bf16 values (1 ulp); the second term is the fp32 error above, for elements that
//         cancel to near zero where an ulp is tiny.
// Prints one line per check; exits 1 if any failed.
#include <cublasLt.h>
#include <omp.h>

#include <cmath>
#include <cstdarg>
#include <random>
#include <vector>

#include "dev/cuda/matmul_gelu_forward.cuh"
#include "llmc/matmul.cuh"
#include "tests/common/reference.h"
#include "tests/common/test_common.h"

static const char* type_name(cudaDataType_t t) {
    return t == CUDA_R_32F ? "fp32" : "bf16";
}
static size_t type_size(cudaDataType_t t) {
    return t == CUDA_R_32F ? 4 : 2;
}

// the value x takes when stored as type t
static double quantize(double x, cudaDataType_t t) {
    return t == CUDA_R_32F ? (double)(float)x : (double)(float)__nv_bfloat16((float)x);
}

// device copy of host values (stored as type t); `bytes` may be more than the values need
static void* to_device(const std::vector<double>& v, cudaDataType_t t, size_t bytes = 0) {
    if (bytes == 0) bytes = v.size() * type_size(t);
    std::vector<unsigned char> host(bytes, 0);
    for (size_t i = 0; i < v.size() && (i + 1) * type_size(t) <= bytes; i++) {
        if (t == CUDA_R_32F) {
            float f = (float)v[i];
            memcpy(&host[i * 4], &f, 4);
        } else {
            __nv_bfloat16 h((float)v[i]);
            memcpy(&host[i * 2], &h, 2);
        }
    }
    void* d = nullptr;
    cudaMalloc(&d, bytes);
    cudaMemcpy(d, host.data(), bytes, cudaMemcpyHostToDevice);
    return d;
}

static std::vector<double> from_device(const void* d, size_t count, cudaDataType_t t) {
    std::vector<unsigned char> host(count * type_size(t));
    cudaMemcpy(host.data(), d, host.size(), cudaMemcpyDeviceToHost);
    std::vector<double> v(count);
    for (size_t i = 0; i < count; i++) {
        if (t == CUDA_R_32F) {
            float f;
            memcpy(&f, &host[i * 4], 4);
            v[i] = f;
        } else {
            __nv_bfloat16 h;
            memcpy(&h, &host[i * 2], 2);
            v[i] = (float)h;
        }
    }
    return v;
}

static std::vector<double> random_values(std::mt19937& rng, size_t count, cudaDataType_t t,
                                         double scale = 1.0) {
    std::uniform_real_distribution<double> u(-scale, scale);
    std::vector<double> v(count);
    for (double& x : v) x = quantize(u(rng), t);
    return v;
}

static double ulp_bf16(double v) {
    int e;
    std::frexp(v == 0.0 ? 1e-30 : v, &e); // v = f 2^e, f in [0.5, 1): 8 significant bits -> ulp 2^(e-8)
    return std::ldexp(1.0, e - 8);
}

// max |got - ref| over the (m, n) column-major block, and whether every element is within tolerance
struct Compare {
    double max_err, max_ref;
    bool ok;
};
static Compare compare(const std::vector<double>& got, int64_t ld_got, const std::vector<double>& ref, int m,
                       int n, cudaDataType_t t) {
    Compare c{0.0, 0.0, true};
    for (int j = 0; j < n; j++) {
        for (int i = 0; i < m; i++) c.max_ref = std::max(c.max_ref, std::fabs(ref[(size_t)j * m + i]));
    }
    for (int j = 0; j < n; j++) {
        for (int i = 0; i < m; i++) {
            const double r = ref[(size_t)j * m + i], g = got[(size_t)j * ld_got + i];
            const double want = t == CUDA_R_32F ? r : quantize(r, t);
            const double tol = t == CUDA_R_32F ? 1e-5 * c.max_ref : 2 * ulp_bf16(r) + 1e-5 * c.max_ref;
            const double err = std::fabs(g - want);
            if (!(err <= tol)) c.ok = false; // also catches NaN
            c.max_err = std::max(c.max_err, std::isnan(err) ? INFINITY : err);
        }
    }
    return c;
}

// ----------------------------------------------------------------------------------------------------
// one matmul against the reference

struct Case {
    cudaDataType_t type;
    bool ta, tb;
    int m, n, k;
    int pad; // extra rows in every leading dimension (A, B, C/D)
    float alpha, beta;
    cublasLtEpilogue_t epilogue;
    bool in_place; // C and D are the same buffer (how the trainer calls it)
};

static bool has_bias(cublasLtEpilogue_t e) {
    return e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_GELU_BIAS ||
           e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
}
static bool has_aux(cublasLtEpilogue_t e) {
    return e == CUBLASLT_EPILOGUE_GELU_AUX || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS ||
           e == CUBLASLT_EPILOGUE_DGELU;
}
static const char* epilogue_name(cublasLtEpilogue_t e) {
    if (e == CUBLASLT_EPILOGUE_DEFAULT) return "DEFAULT";
    if (e == CUBLASLT_EPILOGUE_BIAS) return "BIAS";
    if (e == CUBLASLT_EPILOGUE_GELU) return "GELU";
    if (e == CUBLASLT_EPILOGUE_GELU_BIAS) return "GELU_BIAS";
    if (e == CUBLASLT_EPILOGUE_GELU_AUX) return "GELU_AUX";
    if (e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS) return "GELU_AUX_BIAS";
    if (e == CUBLASLT_EPILOGUE_DGELU) return "DGELU";
    return "?";
}

// Runs the case; returns D as read back (ld = m + pad) so callers can compare runs bit for bit.
static std::vector<double> run_case(cublasLtHandle_t handle, const Case& cs, bool report = true) {
    std::mt19937 rng(1000 + cs.m * 7 + cs.n * 13 + cs.k * 17 + cs.ta * 2 + cs.tb);
    const cudaDataType_t t = cs.type;
    const int m = cs.m, n = cs.n, k = cs.k;
    // stored shapes: op(A) (m,k) is A (k,m) when transposed; op(B) (k,n) is B (n,k)
    const int a_rows = cs.ta ? k : m, a_cols = cs.ta ? m : k, b_rows = cs.tb ? n : k, b_cols = cs.tb ? k : n;
    const int64_t lda = a_rows + cs.pad, ldb = b_rows + cs.pad, ldc = m + cs.pad;
    const int64_t aux_ld = (m + 7) / 8 * 8 + 8;
    std::vector<double> A = random_values(rng, (size_t)lda * a_cols, t);
    std::vector<double> B = random_values(rng, (size_t)ldb * b_cols, t);
    std::vector<double> C = random_values(rng, (size_t)ldc * n, t);
    std::vector<double> bias = random_values(rng, m, t);
    std::vector<double> aux = random_values(rng, (size_t)aux_ld * n, t, 3.0); // DGELU input
    if (cs.beta == 0.0f) {
        for (double& x : C) x = NAN; // beta = 0 must not read C
    }
    void* dA = to_device(A, t);
    void* dB = to_device(B, t);
    void* dC = to_device(C, t);
    void* dD = cs.in_place ? dC : to_device(std::vector<double>(C.size(), NAN), t);
    void* dbias = to_device(bias, t);
    void* daux = to_device(aux, t);

    cublasLtMatmulDesc_t desc;
    cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    cublasOperation_t op_a = cs.ta ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = cs.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a));
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b));
    cublasLtEpilogue_t ep = cs.epilogue;
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof(ep));
    if (has_bias(ep))
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &dbias, sizeof(dbias));
    if (has_aux(ep)) {
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &daux, sizeof(daux));
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof(aux_ld));
    }
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatrixLayoutCreate(&la, t, a_rows, a_cols, lda);
    cublasLtMatrixLayoutCreate(&lb, t, b_rows, b_cols, ldb);
    cublasLtMatrixLayoutCreate(&lc, t, m, n, ldc);
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulPreferenceCreate(&pref);
    cublasLtMatmulHeuristicResult_t heur;
    int returned = 0;
    cublasStatus_t hs =
        cublasLtMatmulAlgoGetHeuristic(handle, desc, la, lb, lc, lc, pref, 1, &heur, &returned);
    cublasStatus_t ms = cublasLtMatmul(handle, desc, &cs.alpha, dA, la, dB, lb, &cs.beta, dC, lc, dD, lc,
                                       &heur.algo, nullptr, 0, nullptr);

    // reference: x = alpha op(A) op(B) + beta C + bias, then the epilogue, all in double
    std::vector<double> ref_d((size_t)m * n), ref_aux((size_t)m * n);
    for (int j = 0; j < n; j++) {
        for (int i = 0; i < m; i++) {
            double sum = 0.0;
            for (int p = 0; p < k; p++) {
                const double a = cs.ta ? A[(size_t)i * lda + p] : A[(size_t)p * lda + i];
                const double b = cs.tb ? B[(size_t)p * ldb + j] : B[(size_t)j * ldb + p];
                sum += a * b;
            }
            double x = cs.alpha * sum;
            if (cs.beta != 0.0f) x += cs.beta * C[(size_t)j * ldc + i];
            if (has_bias(ep)) x += bias[i];
            double out = x;
            if (ep == CUBLASLT_EPILOGUE_DGELU) {
                out = x * gelu_grad_ref(aux[(size_t)j * aux_ld + i]);
            } else if (ep != CUBLASLT_EPILOGUE_DEFAULT && ep != CUBLASLT_EPILOGUE_BIAS) {
                out = gelu_ref(x);
            }
            ref_d[(size_t)j * m + i] = out;
            ref_aux[(size_t)j * m + i] = x;
        }
    }
    std::vector<double> D = from_device(dD, (size_t)ldc * n, t);
    if (report) {
        Compare c = compare(D, ldc, ref_d, m, n, t);
        bool ok = hs == CUBLAS_STATUS_SUCCESS && returned == 1 && ms == CUBLAS_STATUS_SUCCESS && c.ok;
        bool aux_out = ep == CUBLASLT_EPILOGUE_GELU_AUX || ep == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
        Compare ca{0.0, 0.0, true};
        if (aux_out) {
            ca = compare(from_device(daux, (size_t)aux_ld * n, t), aux_ld, ref_aux, m, n, t);
            ok = ok && ca.ok;
        }
        CHECK(
            ok, "%s %c%c m=%-3d n=%-3d k=%-3d ld+%d alpha=%g beta=%g %-13s%s: max err %.2e (max|ref| %.2f)%s",
            type_name(t), cs.ta ? 'T' : 'N', cs.tb ? 'T' : 'N', m, n, k, cs.pad, cs.alpha, cs.beta,
            epilogue_name(ep), cs.in_place ? " in place" : "", c.max_err, c.max_ref, aux_out ? ", aux" : "");
        if (aux_out && !ca.ok) printf("     aux max err %.2e\n", ca.max_err);
        if (hs != CUBLAS_STATUS_SUCCESS || ms != CUBLAS_STATUS_SUCCESS) {
            printf("     heuristic %s, matmul %s\n", cublasLtGetStatusString(hs),
                   cublasLtGetStatusString(ms));
        }
    }
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(lc);
    cublasLtMatmulDescDestroy(desc);
    for (void* p : {dA, dB, dC, dbias, daux}) cudaFree(p);
    if (!cs.in_place) cudaFree(dD);
    return D;
}

static void test_matmuls(cublasLtHandle_t handle) {
    for (cudaDataType_t t : {CUDA_R_32F, CUDA_R_16BF}) {
        for (int ta = 0; ta < 2; ta++) {
            for (int tb = 0; tb < 2; tb++) {
                run_case(handle, Case{t, ta == 1, tb == 1, 37, 13, 29, 0, 1.0f, 0.0f,
                                      CUBLASLT_EPILOGUE_DEFAULT, false});
                run_case(handle, Case{t, ta == 1, tb == 1, 20, 45, 64, 3, 0.5f, 1.0f,
                                      CUBLASLT_EPILOGUE_DEFAULT, false});
                run_case(handle, Case{t, ta == 1, tb == 1, 24, 16, 40, 5, 1.0f, 1.0f,
                                      CUBLASLT_EPILOGUE_DEFAULT, true});
                run_case(handle, Case{t, ta == 1, tb == 1, 24, 16, 40, 0, 1.0f, 0.0f,
                                      CUBLASLT_EPILOGUE_DEFAULT, true});
            }
        }
        // the epilogues, in the shapes the trainer uses (forward: A transposed; backward: neither)
        for (cublasLtEpilogue_t e :
             {CUBLASLT_EPILOGUE_BIAS, CUBLASLT_EPILOGUE_GELU, CUBLASLT_EPILOGUE_GELU_BIAS,
              CUBLASLT_EPILOGUE_GELU_AUX, CUBLASLT_EPILOGUE_GELU_AUX_BIAS, CUBLASLT_EPILOGUE_DGELU}) {
            const bool fwd = e != CUBLASLT_EPILOGUE_DGELU;
            run_case(handle, Case{t, fwd, false, 40, 24, 48, 0, 1.0f, 0.0f, e, true});
            run_case(handle, Case{t, !fwd, true, 33, 17, 21, 2, 0.5f, 1.0f, e, false});
        }
        // several tiles (96 x 256 each) and a ragged edge
        run_case(handle,
                 Case{t, true, false, 300, 270, 100, 1, 1.0f, 1.0f, CUBLASLT_EPILOGUE_GELU_AUX_BIAS, true});
    }
}

// the same call with 1, 2 and 3 threads gives the same bits (each element is summed in a fixed order)
static void test_thread_count(cublasLtHandle_t handle) {
    for (cudaDataType_t t : {CUDA_R_32F, CUDA_R_16BF}) {
        const Case cs{t, true, false, 250, 300, 90, 0, 1.0f, 1.0f, CUBLASLT_EPILOGUE_GELU_AUX_BIAS, true};
        const int saved = omp_get_max_threads();
        std::vector<double> d[3];
        for (int i = 0; i < 3; i++) {
            omp_set_num_threads(i + 1);
            d[i] = run_case(handle, cs, false);
        }
        omp_set_num_threads(saved);
        const bool same = memcmp(d[0].data(), d[1].data(), d[0].size() * sizeof(double)) == 0 &&
                          memcmp(d[0].data(), d[2].data(), d[0].size() * sizeof(double)) == 0;
        CHECK(same, "%s 250x300x90: bit-identical with 1, 2 and 3 threads", type_name(t));
    }
}

// CUBLAS_COMPUTE_32F_FAST_TF32 rounds the inputs to 10 mantissa bits: 1 + 2^-12 becomes 1
static void test_tf32(cublasLtHandle_t handle) {
    std::vector<double> one_plus = {1.0 + std::ldexp(1.0, -12)}, one = {1.0};
    void* dA = to_device(one_plus, CUDA_R_32F);
    void* dB = to_device(one, CUDA_R_32F);
    void* dD = to_device(one, CUDA_R_32F);
    cublasLtMatrixLayout_t l;
    cublasLtMatrixLayoutCreate(&l, CUDA_R_32F, 1, 1, 1);
    const float alpha = 1.0f, beta = 0.0f;
    double got[2];
    const cublasComputeType_t types[2] = {CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_FAST_TF32};
    cublasStatus_t st[2];
    for (int i = 0; i < 2; i++) {
        cublasLtMatmulDesc_t desc;
        cublasLtMatmulDescCreate(&desc, types[i], CUDA_R_32F);
        st[i] = cublasLtMatmul(handle, desc, &alpha, dA, l, dB, l, &beta, dD, l, dD, l, nullptr, nullptr, 0,
                               nullptr);
        got[i] = from_device(dD, 1, CUDA_R_32F)[0];
        cublasLtMatmulDescDestroy(desc);
    }
    CHECK(st[0] == CUBLAS_STATUS_SUCCESS && got[0] == one_plus[0], "COMPUTE_32F keeps 1+2^-12 (got 1%+.3g)",
          got[0] - 1.0);
    CHECK(st[1] == CUBLAS_STATUS_SUCCESS && got[1] == 1.0,
          "COMPUTE_32F_FAST_TF32 rounds 1+2^-12 to 1 (got 1%+.3g)", got[1] - 1.0);
    cublasLtMatrixLayoutDestroy(l);
    for (void* p : {dA, dB, dD}) cudaFree(p);
}

// ----------------------------------------------------------------------------------------------------
// refusals

// a valid problem: D (m,n) = A^T B, A stored (k,m), B (k,n), all of type t, default preference
struct Problem {
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, c, d;
    cublasLtMatmulPreference_t pref;
    int m, n, k;
};
static Problem make_problem(cudaDataType_t t, int m, int n, int k, cublasLtEpilogue_t ep) {
    Problem p;
    p.m = m, p.n = n, p.k = k;
    cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    cublasOperation_t op_t = CUBLAS_OP_T;
    cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof(op_t));
    cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof(ep));
    int64_t aux_ld = (m + 7) / 8 * 8;
    cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof(aux_ld));
    cublasLtMatrixLayoutCreate(&p.a, t, k, m, k);
    cublasLtMatrixLayoutCreate(&p.b, t, k, n, k);
    cublasLtMatrixLayoutCreate(&p.c, t, m, n, m);
    cublasLtMatrixLayoutCreate(&p.d, t, m, n, m);
    cublasLtMatmulPreferenceCreate(&p.pref);
    return p;
}
static void free_problem(Problem& p) {
    for (cublasLtMatrixLayout_t l : {p.a, p.b, p.c, p.d}) cublasLtMatrixLayoutDestroy(l);
    cublasLtMatmulDescDestroy(p.desc);
    cublasLtMatmulPreferenceDestroy(p.pref);
}
static void set_layout(cublasLtMatrixLayout_t* l, cudaDataType_t t, uint64_t rows, uint64_t cols,
                       int64_t ld) {
    cublasLtMatrixLayoutDestroy(*l);
    cublasLtMatrixLayoutCreate(l, t, rows, cols, ld);
}
static cublasStatus_t heuristic(cublasLtHandle_t h, Problem& p, cublasLtMatmulHeuristicResult_t* r = nullptr,
                                int requested = 1) {
    cublasLtMatmulHeuristicResult_t local;
    int returned = -1;
    cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(h, p.desc, p.a, p.b, p.c, p.d, p.pref, requested,
                                                      r != nullptr ? r : &local, &returned);
    if (s == CUBLAS_STATUS_SUCCESS && returned != 1) return CUBLAS_STATUS_INTERNAL_ERROR; // flag it
    return s;
}
static void expect_status(cublasStatus_t got, cublasStatus_t want, const char* what) {
    CHECK(got == want, "%-64s -> %s", what, cublasLtGetStatusString(got));
}

static void test_heuristic_refusals(cublasLtHandle_t h) {
    const cudaDataType_t bf = CUDA_R_16BF;
    const int m = 40, n = 24, k = 32;
    {
        Problem p = make_problem(bf, m, n, k, CUBLASLT_EPILOGUE_DEFAULT);
        cublasLtMatmulHeuristicResult_t r;
        expect_status(heuristic(h, p, &r), CUBLAS_STATUS_SUCCESS, "valid bf16 problem: heuristic");
        CHECK(r.state == CUBLAS_STATUS_SUCCESS, "heuristic result state is SUCCESS");
        expect_status(heuristic(h, p, nullptr, 0), CUBLAS_STATUS_INVALID_VALUE, "requestedAlgoCount 0");
        set_layout(&p.a, bf, k + 1, m, k + 1);
        expect_status(heuristic(h, p), CUBLAS_STATUS_INVALID_VALUE, "A's k disagrees with B's");
        set_layout(&p.a, bf, k, m + 1, k);
        expect_status(heuristic(h, p), CUBLAS_STATUS_INVALID_VALUE, "op(A) has m+1 rows");
        set_layout(&p.a, bf, k, m, k);
        set_layout(&p.b, bf, k, n + 1, k);
        expect_status(heuristic(h, p), CUBLAS_STATUS_INVALID_VALUE, "B has n+1 columns");
        set_layout(&p.b, bf, k, n, k);
        set_layout(&p.c, bf, m + 1, n, m + 1);
        expect_status(heuristic(h, p), CUBLAS_STATUS_INVALID_VALUE, "C is (m+1, n)");
        set_layout(&p.c, bf, m, n, m);
        set_layout(&p.a, bf, k, m, k - 1);
        expect_status(heuristic(h, p), CUBLAS_STATUS_INVALID_VALUE, "lda < rows of A");
        set_layout(&p.a, CUDA_R_32F, k, m, k);
        expect_status(heuristic(h, p), CUBLAS_STATUS_NOT_SUPPORTED, "A fp32, B C D bf16");
        for (cublasLtMatrixLayout_t* l : {&p.a, &p.b, &p.c, &p.d}) {
            cublasLtMatrixLayoutOpaque_t old = **l;
            set_layout(l, CUDA_R_16F, old.rows, old.cols, old.ld);
        }
        expect_status(heuristic(h, p), CUBLAS_STATUS_NOT_SUPPORTED, "all CUDA_R_16F");
        free_problem(p);
    }
    {
        Problem p = make_problem(bf, m, n, k, CUBLASLT_EPILOGUE_DEFAULT);
        int32_t ct = CUBLAS_COMPUTE_16F, st = CUDA_R_16BF;
        cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_COMPUTE_TYPE, &ct, sizeof(ct));
        expect_status(heuristic(h, p), CUBLAS_STATUS_NOT_SUPPORTED, "compute type CUBLAS_COMPUTE_16F");
        ct = CUBLAS_COMPUTE_32F_FAST_TF32;
        cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_COMPUTE_TYPE, &ct, sizeof(ct));
        expect_status(heuristic(h, p), CUBLAS_STATUS_SUCCESS, "compute type CUBLAS_COMPUTE_32F_FAST_TF32");
        cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_SCALE_TYPE, &st, sizeof(st));
        expect_status(heuristic(h, p), CUBLAS_STATUS_NOT_SUPPORTED, "scale type CUDA_R_16BF");
        free_problem(p);
    }
    for (cublasLtEpilogue_t e :
         {CUBLASLT_EPILOGUE_RELU, CUBLASLT_EPILOGUE_DGELU_BGRAD, CUBLASLT_EPILOGUE_BGRADB}) {
        Problem p = make_problem(bf, m, n, k, e);
        char what[64];
        snprintf(what, sizeof(what), "epilogue %d (not emulated)", (int)e);
        expect_status(heuristic(h, p), CUBLAS_STATUS_NOT_SUPPORTED, what);
        free_problem(p);
    }
    {
        Problem p = make_problem(bf, m, n, k, CUBLASLT_EPILOGUE_GELU_BIAS);
        int32_t bt = CUDA_R_32F;
        cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt));
        expect_status(heuristic(h, p), CUBLAS_STATUS_NOT_SUPPORTED, "fp32 bias with a bf16 D");
        bt = CUDA_R_16BF;
        cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt));
        expect_status(heuristic(h, p), CUBLAS_STATUS_SUCCESS, "bf16 bias with a bf16 D");
        free_problem(p);
    }
    {
        Problem p = make_problem(bf, m, n, k, CUBLASLT_EPILOGUE_GELU_AUX);
        void* aux = nullptr;
        cudaMalloc(&aux, 64 * n * 2 + 64);
        void* aux_off = (char*)aux + 8;
        cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof(aux));
        expect_status(heuristic(h, p), CUBLAS_STATUS_SUCCESS, "GELU_AUX, aux ld m (a multiple of 8)");
        int64_t ld = m + 4;
        cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof(ld));
        expect_status(heuristic(h, p), CUBLAS_STATUS_NOT_SUPPORTED, "aux ld m+4, not a multiple of 8");
        ld = m - 8;
        cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof(ld));
        expect_status(heuristic(h, p), CUBLAS_STATUS_INVALID_VALUE, "aux ld m-8 < m");
        ld = m;
        cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof(ld));
        cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux_off,
                                       sizeof(aux_off));
        expect_status(heuristic(h, p), CUBLAS_STATUS_NOT_SUPPORTED,
                      "aux pointer 8 bytes off 16-byte alignment");
        cudaFree(aux);
        free_problem(p);
    }
    {
        // SetAttribute checks the size of the value
        Problem p = make_problem(bf, m, n, k, CUBLASLT_EPILOGUE_DEFAULT);
        int64_t wide = CUBLAS_OP_T;
        int32_t narrow = 64;
        uint64_t align64 = 16;
        expect_status(
            cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &wide, sizeof(wide)),
            CUBLAS_STATUS_INVALID_VALUE, "DescSetAttribute TRANSA with 8 bytes");
        expect_status(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &narrow,
                                                     sizeof(narrow)),
                      CUBLAS_STATUS_INVALID_VALUE, "DescSetAttribute EPILOGUE_AUX_LD with 4 bytes");
        expect_status(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, nullptr, 4),
                      CUBLAS_STATUS_INVALID_VALUE, "DescSetAttribute with a null buffer");
        expect_status(cublasLtMatmulPreferenceSetAttribute(p.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                           &align64, sizeof(align64)),
                      CUBLAS_STATUS_INVALID_VALUE, "PreferenceSetAttribute MIN_ALIGNMENT_A with 8 bytes");
        expect_status(cublasLtMatmulPreferenceSetAttribute(p.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                           &align64, sizeof(align64)),
                      CUBLAS_STATUS_SUCCESS, "PreferenceSetAttribute MAX_WORKSPACE_BYTES with 8 bytes");
        free_problem(p);
    }
}

// device buffers for a (m,n,k) bf16 problem of make_problem's shapes, with room to offset the pointers
struct Buffers {
    void *a, *b, *d, *bias, *aux;
};
static Buffers make_buffers(const Problem& p) {
    Buffers b;
    cudaMalloc(&b.a, (size_t)p.k * p.m * 2 + 256);
    cudaMalloc(&b.b, (size_t)p.k * p.n * 2 + 256);
    cudaMalloc(&b.d, (size_t)p.m * p.n * 2 + 256);
    cudaMalloc(&b.bias, (size_t)p.m * 2 + 256);
    cudaMalloc(&b.aux, (size_t)(p.m + 7) / 8 * 8 * p.n * 2 + 256);
    for (void* x : {b.a, b.b, b.d, b.bias, b.aux}) memset(x, 0, 16); // contents do not matter here
    return b;
}
static void free_buffers(Buffers& b) {
    for (void* x : {b.a, b.b, b.d, b.bias, b.aux}) cudaFree(x);
}
static cublasStatus_t matmul(cublasLtHandle_t h, Problem& p, const void* a, const void* b, const void* c,
                             void* d, const cublasLtMatmulAlgo_t* algo, float beta = 0.0f, void* ws = nullptr,
                             size_t ws_bytes = 0) {
    const float alpha = 1.0f;
    return cublasLtMatmul(h, p.desc, &alpha, a, p.a, b, p.b, &beta, c, p.c, d, p.d, algo, ws, ws_bytes,
                          nullptr);
}
static void set_pointer(Problem& p, cublasLtMatmulDescAttributes_t attr, const void* ptr) {
    cublasLtMatmulDescSetAttribute(p.desc, attr, &ptr, sizeof(ptr));
}

static void test_matmul_refusals(cublasLtHandle_t h) {
    const cudaDataType_t bf = CUDA_R_16BF;
    const int m = 40, n = 24, k = 32;
    cublasLtMatmulHeuristicResult_t r;
    {
        Problem p = make_problem(bf, m, n, k, CUBLASLT_EPILOGUE_DEFAULT);
        Buffers b = make_buffers(p);
        heuristic(h, p, &r);
        char* a16 = (char*)b.a + 16; // 16- but not 32-byte aligned
        expect_status(matmul(h, p, b.a, b.b, b.d, b.d, &r.algo), CUBLAS_STATUS_SUCCESS,
                      "256-byte aligned pointers");
        expect_status(matmul(h, p, a16, b.b, b.d, b.d, &r.algo), CUBLAS_STATUS_INVALID_VALUE,
                      "A 16-byte aligned, preference default (256)");
        expect_status(matmul(h, p, a16, b.b, b.d, b.d, nullptr), CUBLAS_STATUS_INVALID_VALUE,
                      "A 16-byte aligned, algo NULL (default preference)");
        expect_status(matmul(h, p, b.a, b.b, b.d, b.d, nullptr), CUBLAS_STATUS_SUCCESS,
                      "256-byte aligned pointers, algo NULL");
        uint32_t align = 16;
        cublasLtMatmulPreferenceSetAttribute(p.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align,
                                             sizeof(align));
        heuristic(h, p, &r);
        expect_status(matmul(h, p, a16, b.b, b.d, b.d, &r.algo), CUBLAS_STATUS_SUCCESS,
                      "A 16-byte aligned, preference MIN_ALIGNMENT_A 16");
        expect_status(matmul(h, p, (char*)b.a + 8, b.b, b.d, b.d, &r.algo), CUBLAS_STATUS_INVALID_VALUE,
                      "A 8-byte aligned, preference MIN_ALIGNMENT_A 16");
        const float alpha = 1.0f, beta = 0.0f;
        expect_status(cublasLtMatmul(h, p.desc, nullptr, b.a, p.a, b.b, p.b, &beta, b.d, p.c, b.d, p.d,
                                     &r.algo, nullptr, 0, nullptr),
                      CUBLAS_STATUS_INVALID_VALUE, "alpha NULL");
        set_layout(&p.c, bf, m, n, m + 8);
        expect_status(cublasLtMatmul(h, p.desc, &alpha, b.a, p.a, b.b, p.b, &beta, b.d, p.c, b.d, p.d,
                                     &r.algo, nullptr, 0, nullptr),
                      CUBLAS_STATUS_INVALID_VALUE, "C == D with ldc != ldd");
        free_buffers(b);
        free_problem(p);
    }
    {
        Problem p = make_problem(bf, m, n, k, CUBLASLT_EPILOGUE_BIAS);
        Buffers b = make_buffers(p);
        heuristic(h, p, &r);
        expect_status(matmul(h, p, b.a, b.b, b.d, b.d, &r.algo), CUBLAS_STATUS_INVALID_VALUE,
                      "BIAS epilogue without a bias pointer");
        set_pointer(p, CUBLASLT_MATMUL_DESC_BIAS_POINTER, b.bias);
        heuristic(h, p, &r); // sees a 256-byte aligned bias
        expect_status(matmul(h, p, b.a, b.b, b.d, b.d, &r.algo), CUBLAS_STATUS_SUCCESS,
                      "BIAS epilogue with a bias");
        set_pointer(p, CUBLASLT_MATMUL_DESC_BIAS_POINTER, (char*)b.bias + 16);
        expect_status(matmul(h, p, b.a, b.b, b.d, b.d, &r.algo), CUBLAS_STATUS_INVALID_VALUE,
                      "bias 16-byte aligned, heuristic saw it 256-byte aligned");
        heuristic(h, p, &r); // now sees the 16-byte aligned bias
        expect_status(matmul(h, p, b.a, b.b, b.d, b.d, &r.algo), CUBLAS_STATUS_SUCCESS,
                      "bias 16-byte aligned, heuristic saw the same pointer");
        free_buffers(b);
        free_problem(p);
    }
    for (cublasLtEpilogue_t e : {CUBLASLT_EPILOGUE_GELU_AUX, CUBLASLT_EPILOGUE_DGELU}) {
        Problem p = make_problem(bf, m, n, k, e);
        Buffers b = make_buffers(p);
        heuristic(h, p, &r);
        char what[64];
        snprintf(what, sizeof(what), "%s epilogue without an aux pointer", epilogue_name(e));
        expect_status(matmul(h, p, b.a, b.b, b.d, b.d, &r.algo), CUBLAS_STATUS_INVALID_VALUE, what);
        free_buffers(b);
        free_problem(p);
    }
}

// pointers outside the emulated device memory stop the program, naming the matrix
static void test_fatal() {
    const cudaDataType_t bf = CUDA_R_16BF;
    const int m = 40, n = 24, k = 32;
    auto with = [&](cublasLtEpilogue_t e,
                    const std::function<void(cublasLtHandle_t, Problem&, Buffers&)>& fn) {
        return [=]() {
            cublasLtHandle_t h;
            cublasLtCreate(&h);
            Problem p = make_problem(bf, m, n, k, e);
            Buffers b = make_buffers(p);
            fn(h, p, b);
        };
    };
    // host memory, 256-byte aligned so that only its being host memory is wrong
    alignas(256) static unsigned char host[1 << 20];
    expect_failure(
        "A in host memory",
        with(CUBLASLT_EPILOGUE_DEFAULT,
             [](cublasLtHandle_t h, Problem& p, Buffers& b) { matmul(h, p, host, b.b, b.d, b.d, nullptr); }),
        {"CUDA emulator", "matrix A"});
    expect_failure("B one element short",
                   with(CUBLASLT_EPILOGUE_DEFAULT,
                        [](cublasLtHandle_t h, Problem& p, Buffers& b) {
                            void* small = nullptr;
                            cudaMalloc(&small, (size_t)p.k * p.n * 2 - 2);
                            (void)b;
                            matmul(h, p, b.a, small, b.d, b.d, nullptr);
                        }),
                   {"CUDA emulator", "matrix B"});
    expect_failure(
        "C in host memory, beta 1",
        with(CUBLASLT_EPILOGUE_DEFAULT, [](cublasLtHandle_t h, Problem& p,
                                           Buffers& b) { matmul(h, p, b.a, b.b, host, b.d, nullptr, 1.0f); }),
        {"CUDA emulator", "matrix C"});
    expect_failure(
        "D in host memory",
        with(CUBLASLT_EPILOGUE_DEFAULT,
             [](cublasLtHandle_t h, Problem& p, Buffers& b) { matmul(h, p, b.a, b.b, b.d, host, nullptr); }),
        {"CUDA emulator", "matrix D"});
    expect_failure("bias in host memory",
                   with(CUBLASLT_EPILOGUE_BIAS,
                        [](cublasLtHandle_t h, Problem& p, Buffers& b) {
                            set_pointer(p, CUBLASLT_MATMUL_DESC_BIAS_POINTER, host);
                            matmul(h, p, b.a, b.b, b.d, b.d, nullptr);
                        }),
                   {"CUDA emulator", "bias"});
    expect_failure("aux allocation too short for aux ld",
                   with(CUBLASLT_EPILOGUE_GELU_AUX,
                        [](cublasLtHandle_t h, Problem& p, Buffers& b) {
                            int64_t ld = 4096;
                            cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld,
                                                           sizeof(ld));
                            set_pointer(p, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, b.aux);
                            matmul(h, p, b.a, b.b, b.d, b.d, nullptr);
                        }),
                   {"CUDA emulator", "aux"});
    expect_failure("workspace smaller than its stated size",
                   with(CUBLASLT_EPILOGUE_DEFAULT,
                        [](cublasLtHandle_t h, Problem& p, Buffers& b) {
                            void* ws = nullptr;
                            cudaMalloc(&ws, 1024);
                            matmul(h, p, b.a, b.b, b.d, b.d, nullptr, 0.0f, ws, 4096);
                        }),
                   {"CUDA emulator", "workspace"});
    expect_failure("attribute the emulator lacks",
                   with(CUBLASLT_EPILOGUE_DEFAULT,
                        [](cublasLtHandle_t, Problem& p, Buffers&) {
                            int32_t mode = 0; // CUBLASLT_MATMUL_DESC_POINTER_MODE
                            cublasLtMatmulDescSetAttribute(p.desc, (cublasLtMatmulDescAttributes_t)2, &mode,
                                                           sizeof(mode));
                        }),
                   {"CUDA emulator", "not emulated"});
    // beta == 0 reads no C: a host pointer there is fine
    cublasLtHandle_t h;
    cublasLtCreate(&h);
    Problem p = make_problem(bf, m, n, k, CUBLASLT_EPILOGUE_DEFAULT);
    Buffers b = make_buffers(p);
    set_layout(&p.c, bf, m, n, m + 8); // C is its own matrix here
    expect_status(matmul(h, p, b.a, b.b, host, b.d, nullptr), CUBLAS_STATUS_SUCCESS,
                  "beta 0 with C in host memory (C is not read)");
    free_buffers(b);
    free_problem(p);
    cublasLtDestroy(h);
}

// ----------------------------------------------------------------------------------------------------
// llmc/matmul.cuh on the emulator (floatX: bf16, or fp32 with -DENABLE_FP32): its cuBLASLt calls and its
// kernels. Row-major inp (BT,C), W (OC,C), b (OC), out (BT,OC). The unfused path rounds pre_gelu (and dinp
// before the GELU backward) to floatX in between, so its reference rounds there too.

static void test_matmul_cuh() {
    const int BT = 96, C = 48, OC = 40; // two bias-gradient partials of 64 rows
    std::mt19937 rng(99);
    const cudaDataType_t t = CUBLAS_FLOATX;
    const size_t es = sizeof(floatX);
    std::vector<double> inp = random_values(rng, (size_t)BT * C, t),
                        w = random_values(rng, (size_t)OC * C, t);
    std::vector<double> b = random_values(rng, OC, t), dout = random_values(rng, (size_t)BT * OC, t);
    std::vector<double> dw0 = random_values(rng, (size_t)OC * C, t), db0 = random_values(rng, OC, t);
    std::vector<double> pre_in = random_values(rng, (size_t)BT * C, t, 3.0); // pre-GELU input of the backward
    floatX* d_inp = (floatX*)to_device(inp, t);
    floatX* d_w = (floatX*)to_device(w, t);
    floatX* d_b = (floatX*)to_device(b, t);
    floatX* d_dout = (floatX*)to_device(dout, t);
    floatX* d_pre_in = (floatX*)to_device(pre_in, t);
    void* d_dw0 = to_device(dw0, t);
    void* d_db0 = to_device(db0, t);
    floatX *d_out, *d_pre, *d_dinp, *d_dw, *d_db;
    float* scratch;
    cudaMalloc(&d_out, (size_t)BT * OC * es);
    cudaMalloc(&d_pre, (size_t)BT * OC * es);
    cudaMalloc(&d_dinp, (size_t)BT * C * es);
    cudaMalloc(&d_dw, (size_t)OC * C * es);
    cudaMalloc(&d_db, (size_t)OC * es);
    cudaMalloc(&scratch, matmul_dbias_scratch_bytes(BT, OC));
    MatmulContext ctx;
    matmul_context_init(&ctx);

    // forward reference: pre = inp W^T + b
    std::vector<double> pre((size_t)BT * OC), out_fused(pre.size()), out_unfused(pre.size());
    for (int r = 0; r < BT; r++) {
        for (int o = 0; o < OC; o++) {
            double s = b[o];
            for (int c = 0; c < C; c++) s += inp[(size_t)r * C + c] * w[(size_t)o * C + c];
            pre[(size_t)r * OC + o] = s;
            out_fused[(size_t)r * OC + o] = gelu_ref(s);
            out_unfused[(size_t)r * OC + o] = gelu_ref(quantize(s, t));
        }
    }
    for (int fused = 1; fused >= 0; fused--) {
        ctx.fuse_gelu = fused == 1;
        matmul_forward_gelu(&ctx, d_out, d_pre, d_inp, d_w, d_b, BT, C, OC, nullptr);
        Compare co =
            compare(from_device(d_out, pre.size(), t), OC, fused ? out_fused : out_unfused, OC, BT, t);
        Compare cp = compare(from_device(d_pre, pre.size(), t), OC, pre, OC, BT, t);
        CHECK(co.ok && cp.ok, "matmul_forward_gelu bias+GELU (%s): out max err %.2e, pre_gelu max err %.2e",
              fused ? "GELU_AUX_BIAS epilogue" : "unfused, gelu.cuh kernel", co.max_err, cp.max_err);
    }
    matmul_forward(&ctx, d_out, d_inp, d_w, nullptr, BT, C, OC, nullptr);
    std::vector<double> nobias(pre);
    for (int r = 0; r < BT; r++) {
        for (int o = 0; o < OC; o++) nobias[(size_t)r * OC + o] -= b[o];
    }
    Compare cn = compare(from_device(d_out, pre.size(), t), OC, nobias, OC, BT, t);
    CHECK(cn.ok, "matmul_forward without bias: max err %.2e", cn.max_err);

    // backward reference: g = dout W, dinp = g * gelu'(pre_in), dW = dW0 + dout^T inp, db = db0 +
    // colsum(dout)
    std::vector<double> dinp_fused((size_t)BT * C), dinp_unfused(dinp_fused.size()), dw(dw0), db(db0);
    for (int r = 0; r < BT; r++) {
        for (int c = 0; c < C; c++) {
            double g = 0.0;
            for (int o = 0; o < OC; o++) g += dout[(size_t)r * OC + o] * w[(size_t)o * C + c];
            const double grad = gelu_grad_ref(pre_in[(size_t)r * C + c]);
            dinp_fused[(size_t)r * C + c] = g * grad;
            dinp_unfused[(size_t)r * C + c] = quantize(g, t) * grad;
        }
    }
    for (int o = 0; o < OC; o++) {
        for (int r = 0; r < BT; r++) db[o] += dout[(size_t)r * OC + o];
        for (int c = 0; c < C; c++) {
            for (int r = 0; r < BT; r++)
                dw[(size_t)o * C + c] += dout[(size_t)r * OC + o] * inp[(size_t)r * C + c];
        }
    }
    for (int fused = 1; fused >= 0; fused--) {
        ctx.fuse_gelu = fused == 1;
        cudaMemcpy(d_dw, d_dw0, dw0.size() * es, cudaMemcpyDeviceToDevice);
        cudaMemcpy(d_db, d_db0, db0.size() * es, cudaMemcpyDeviceToDevice);
        matmul_backward(&ctx, d_dinp, d_dw, d_db, d_dout, d_inp, d_w, BT, C, OC, d_pre_in, scratch, nullptr);
        Compare ci = compare(from_device(d_dinp, dinp_fused.size(), t), C, fused ? dinp_fused : dinp_unfused,
                             C, BT, t);
        Compare cw = compare(from_device(d_dw, dw.size(), t), C, dw, C, OC, t);
        Compare cb = compare(from_device(d_db, db.size(), t), OC, db, OC, 1, t);
        CHECK(ci.ok && cw.ok && cb.ok,
              "matmul_backward with GELU (%s): dinp %.2e, dW (accumulated) %.2e, db %.2e",
              fused ? "DGELU epilogue" : "unfused, gelu.cuh kernel", ci.max_err, cw.max_err, cb.max_err);
    }
    matmul_context_free(&ctx);
    for (void* p : {(void*)d_inp, (void*)d_w, (void*)d_b, (void*)d_dout, (void*)d_pre_in, (void*)d_out,
                    (void*)d_pre, (void*)d_dinp, (void*)d_dw, (void*)d_db, (void*)scratch, d_dw0, d_db0}) {
        cudaFree(p);
    }
}

int main() {
    test_list_checks();
    cublasLtHandle_t handle;
    cublasLtCreate(&handle);
    printf("-- cublasLtMatmul against a double reference\n");
    test_matmuls(handle);
    test_thread_count(handle);
    test_tf32(handle);
    printf("-- refusals\n");
    test_heuristic_refusals(handle);
    test_matmul_refusals(handle);
    test_fatal();
    CHECK(strstr(cublasLtGetStatusString(CUBLAS_STATUS_NOT_SUPPORTED), "NOT_SUPPORTED") != nullptr,
          "cublasLtGetStatusString names the status");
    printf("-- llmc/matmul.cuh, floatX %s\n", PRECISION_NAME);
    test_matmul_cuh();
    cublasLtDestroy(handle);
    return test_summary("test_emu_cublaslt");
}
