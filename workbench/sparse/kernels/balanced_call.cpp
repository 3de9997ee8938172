// Balanced Sparsity (Yao et al., AAAI 2019): the Python entry of the CPU kernels' small-batch paths.
//
// BalancedMatrix.matmul and BalancedSparseLinear.forward at small batches call one kernel of balanced_cpu.cpp per
// product. From Python that takes several steps (check x, allocate y, a ctypes call with 14 arguments; the layer
// also its plan, layout and bias), and after a cache flush - in a model, after the previous layer streamed its
// weights - Python runs cold (measured 2026-11-30, 4096^2 at 90.6%, batch 1, 2 threads, caches flushed,
// interleaved medians of 100: 229 us through matmul's Python path, 171 us for the bare kernel into a preallocated
// y, 180 us through this binding). A Runner holds what does not change between calls (each batch's kernel: its
// function pointer, the layout it reads, its flags; the shapes) and does the rest in one C++ call: check x,
// allocate y, run the kernel without the GIL.
//
// The kernels stay in balanced_cpu.cpp (called here through the addresses ctypes resolved in that library), so this
// file has no kernel code and compiles in seconds against pybind11 and ATen's core headers (not torch/extension.h).
// Built at first use by workbench/sparse/kernels/cpp.py; where it cannot be built, the Python path runs the same
// kernels.
//
// runner(x, values, offsets) -> W @ x and runner.linear(x, values, offsets, bias) -> x W^T + bias return None for
// any call they do not take: another dtype or device, a wrong shape, a non-contiguous x, a batch above maxn or one
// without a kernel set yet, and weights that are no longer the ones it was made for (other tensors than the owner
// holds now, a changed version counter or storage, or bump() called when the kernel library was reset). The caller
// then goes the general way, which rebuilds.
#include <torch/csrc/utils/pybind.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace py = pybind11;

namespace {

using i64 = int64_t;
// the three entry points of balanced_cpu.cpp the small-batch path uses (see their comments there)
using TilesFn = int (*)(int, const void*, const void*, const void*, void*, const void*, i64, i64, i64, i64, i64, i64,
                        int, int);
using MatmulFn = int (*)(int, int, const void*, const void*, const void*, void*, const void*, i64, i64, i64, i64, i64,
                         i64, int, int);
using GroupsFn = int (*)(int, const void*, const void*, const void*, void*, const void*, i64, i64, i64, i64, i64, i64,
                         int, int, i64);

enum Sig { NONE = 0, TILES = 1, MATMUL = 2, GROUPS = 3 };

std::atomic<i64> g_epoch{0};

struct Entry {
    int sig = NONE;
    uintptr_t fn = 0;
    int code0 = 0, code1 = 0;  // tiles / groups: offset type code; matmul: value type code, offset type code
    int flags = 0;
    i64 tail = 0;              // groups: banks per group
    at::Tensor v, o;           // the layout the kernel reads (kept alive by the entry)
};

class Runner {
  public:
    Runner(at::Tensor values, at::Tensor offsets, i64 cols, i64 bank_size, i64 maxn)
        : values_(std::move(values)), offsets_(std::move(offsets)), cols_(cols), bank_(bank_size), maxn_(maxn),
          epoch_(g_epoch.load()), entries_(static_cast<size_t>(maxn)), linear_(static_cast<size_t>(maxn)) {
        if (values_.dim() != 3 || offsets_.sizes() != values_.sizes() || maxn < 1 || bank_size < 1 || cols < 1)
            throw std::invalid_argument("Runner: values and offsets must be (rows, banks, k); cols, bank, maxn >= 1");
        rows_ = values_.size(0);
        banks_ = values_.size(1);
        k_ = values_.size(2);
        dtype_ = values_.scalar_type();
        vptr_ = values_.data_ptr();
        optr_ = offsets_.data_ptr();
        vver_ = values_._version();
        over_ = offsets_._version();
    }

    // the kernel of batch n (1-based) for W @ x (x (cols,) or (cols, n)) or, with linear, for a Linear layer's
    // x (..., cols) -> y (..., rows) + bias: the entry point's address (ctypes), its signature and arguments
    void set(i64 n, int sig, uintptr_t fn, int code0, int code1, at::Tensor v, at::Tensor o, int flags, i64 tail,
             bool linear) {
        if (n < 1 || n > maxn_ || sig < TILES || sig > GROUPS || fn == 0)
            throw std::invalid_argument("Runner.set: bad batch, signature or function");
        Entry& e = (linear ? linear_ : entries_)[static_cast<size_t>(n - 1)];
        e.sig = sig;
        e.fn = fn;
        e.code0 = code0;
        e.code1 = code1;
        e.v = std::move(v);
        e.o = std::move(o);
        e.flags = flags;
        e.tail = tail;
    }

    // still the weights it was made for: the same tensors (values, offsets as the owner holds them now), unchanged
    bool valid_for(const at::Tensor& values, const at::Tensor& offsets) const {
        return values.unsafeGetTensorImpl() == values_.unsafeGetTensorImpl() &&
               offsets.unsafeGetTensorImpl() == offsets_.unsafeGetTensorImpl() &&
               epoch_ == g_epoch.load(std::memory_order_relaxed) && values_._version() == vver_ &&
               offsets_._version() == over_ && values_.data_ptr() == vptr_ && offsets_.data_ptr() == optr_;
    }

    // W @ x, x (cols,) or (cols, n)
    py::object call(const at::Tensor& x, const at::Tensor& values, const at::Tensor& offsets) const {
        if (!takes(x)) return py::none();
        const i64 nd = x.dim();
        if ((nd != 1 && nd != 2) || x.size(0) != cols_) return py::none();
        const i64 n = nd == 1 ? 1 : x.size(1);
        if (n < 1 || n > maxn_ || !x.is_contiguous() || !valid_for(values, offsets)) return py::none();
        const Entry e = entries_[static_cast<size_t>(n - 1)];  // a copy: its tensors stay alive without the GIL
        if (e.sig == NONE) return py::none();
        at::Tensor y = nd == 1 ? at::empty({rows_}, x.options()) : at::empty({rows_, n}, x.options());
        run(e, x.data_ptr(), y.data_ptr(), nullptr, n);
        return py::cast(std::move(y));
    }

    // a Linear layer's x (..., cols) -> y (..., rows) (+ bias (rows,))
    py::object linear(const at::Tensor& x, const at::Tensor& values, const at::Tensor& offsets,
                      const c10::optional<at::Tensor>& bias) {
        if (!takes(x)) return py::none();
        const i64 nd = x.dim();
        if (nd < 1 || x.size(nd - 1) != cols_ || !x.is_contiguous()) return py::none();
        const i64 n = x.numel() / cols_;
        if (n < 1 || n > maxn_ || !valid_for(values, offsets)) return py::none();
        const void* bp = nullptr;
        if (bias.has_value() && bias->defined()) {
            const at::Tensor& b = *bias;
            if (b.layout() != at::kStrided || !b.device().is_cpu() || b.scalar_type() != dtype_ || b.dim() != 1 ||
                b.size(0) != rows_ || !b.is_contiguous() || b.is_neg() || b.is_conj())
                return py::none();
            bp = b.data_ptr();
        }
        const Entry e = linear_[static_cast<size_t>(n - 1)];
        if (e.sig == NONE) return py::none();
        std::vector<i64> shape(x.sizes().begin(), x.sizes().end());
        shape.back() = rows_;
        at::Tensor y = at::empty(shape, x.options());
        run(e, x.data_ptr(), y.data_ptr(), bp, n);
        ++calls_;
        last_n_ = n;
        return py::cast(std::move(y));
    }

    i64 calls() const { return calls_; }
    i64 last_n() const { return last_n_; }

  private:
    bool takes(const at::Tensor& x) const {
        return x.defined() && x.layout() == at::kStrided && x.device().is_cpu() && x.scalar_type() == dtype_ &&
               !x.is_neg() && !x.is_conj();
    }

    void run(const Entry& e, const void* xp, void* yp, const void* bp, i64 n) const {
        int rc;
        {
            py::gil_scoped_release nogil;
            if (e.sig == TILES)
                rc = reinterpret_cast<TilesFn>(e.fn)(e.code0, e.v.data_ptr(), e.o.data_ptr(), xp, yp, bp, rows_,
                                                     banks_, k_, bank_, cols_, n, 0, e.flags);
            else if (e.sig == MATMUL)
                rc = reinterpret_cast<MatmulFn>(e.fn)(e.code0, e.code1, e.v.data_ptr(), e.o.data_ptr(), xp, yp, bp,
                                                      rows_, banks_, k_, bank_, cols_, n, 0, e.flags);
            else
                rc = reinterpret_cast<GroupsFn>(e.fn)(e.code0, e.v.data_ptr(), e.o.data_ptr(), xp, yp, bp, rows_,
                                                      banks_, k_, bank_, cols_, n, 0, e.flags, e.tail);
        }
        if (rc != 0) throw std::runtime_error("balanced C++ kernel failed with code " + std::to_string(rc));
    }

    at::Tensor values_, offsets_;
    i64 cols_, bank_, maxn_, epoch_;
    std::vector<Entry> entries_, linear_;
    i64 rows_ = 0, banks_ = 0, k_ = 0;
    at::ScalarType dtype_ = at::kFloat;
    const void* vptr_ = nullptr;
    const void* optr_ = nullptr;
    i64 vver_ = 0, over_ = 0;
    i64 calls_ = 0, last_n_ = 0;  // linear calls (updated with the GIL held)
};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "Balanced Sparsity: one-call Python entry of the CPU small-batch kernels (see balanced_call.cpp)";
    m.attr("ABI") = 1;
    m.attr("TILES") = static_cast<int>(TILES);
    m.attr("MATMUL") = static_cast<int>(MATMUL);
    m.attr("GROUPS") = static_cast<int>(GROUPS);
    m.def("bump", []() { g_epoch.fetch_add(1); }, "Invalidate every Runner (the kernel library was reset).");
    py::class_<Runner>(m, "Runner")
        .def(py::init<at::Tensor, at::Tensor, i64, i64, i64>(), py::arg("values"), py::arg("offsets"),
             py::arg("cols"), py::arg("bank_size"), py::arg("maxn"))
        .def("set", &Runner::set, py::arg("n"), py::arg("sig"), py::arg("fn"), py::arg("code0"), py::arg("code1"),
             py::arg("v"), py::arg("o"), py::arg("flags"), py::arg("tail"), py::arg("linear") = false)
        .def("valid_for", &Runner::valid_for, py::arg("values"), py::arg("offsets"))
        .def("__call__", &Runner::call, py::arg("x"), py::arg("values"), py::arg("offsets"))
        .def("linear", &Runner::linear, py::arg("x"), py::arg("values"), py::arg("offsets"), py::arg("bias"))
        .def_property_readonly("calls", &Runner::calls)
        .def_property_readonly("last_n", &Runner::last_n);
}
