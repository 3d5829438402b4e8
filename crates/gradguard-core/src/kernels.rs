//! Slice kernels for the fused statistics pass.
//!
//! # Accuracy and range
//! Sums of squares never overflow and stay accurate over any length (tested to 10^8 values):
//! - The exact builds (AVX2, portable) widen each f32 to f64 before squaring. The product of
//!   two f32 values is exact in f64 (24 + 24 significand bits fit in 53), and the largest f32
//!   (3.4e38) squares to 1.2e77, far below f64's 1.8e308, so values near 1e30 (or f32::MAX)
//!   never overflow. Sums run in independent f64 lanes over blocks of [`BLOCK`] values whose
//!   sums are added into the total: relative error at most about (n / BLOCK + BLOCK / 8) *
//!   2^-53 on the sum of squares, 2.8e-12 for 10^8 values (1.4e-12 on the norm) in the worst
//!   case; measured 1.7e-14 on the norm of 10^8 values of 0.1, and the tests hold the exact
//!   builds to 1e-12 on the norm.
//! - The AVX-512 build squares in f32 where that is safe, which halves the work (no f32 -> f64
//!   conversion per value): within each sub-block of 1024 values whose max |x| lies in
//!   [2^-50, 2^60], each f32 lane adds 16 squares, four lanes are added pairwise, then the
//!   result is widened and summed in f64. Relative error: below 18 * 2^-24 = 1.1e-6 per
//!   sub-block, whatever n is (PyTorch's own f32 norms do worse on long tensors). A sub-block with larger values (squares that
//!   could overflow f32), smaller ones (squares that would fall below f32's normal range), or a
//!   NaN or infinity is summed again exactly by the f64 loop, as is the tail.
//!
//! The maximum of |x| ignores NaN (comparisons with NaN are false) but keeps infinities.
//!
//! # Non-finite values, counted exactly without a per-element test
//! The sum of squares of finite f32 values is always finite in f64 (at most 1.2e77 per
//! value), so `sum_sq` is finite exactly when every value is. The hot loop therefore only
//! squares, sums and takes the maximum; a slice whose sum is NaN or infinite is scanned a second
//! time to count its non-finite values exactly (a step that is already going wrong pays for it).
//!
//! # Speed
//! The loops are written with explicit AVX-512F/DQ or AVX2 intrinsics, chosen at run time
//! (`is_x86_feature_detected!`, decided once per process and cached in a `OnceLock`, so a
//! call pays one atomic load), with a portable loop elsewhere: LLVM does not vectorise
//! the mixed f32/f64 loop well by itself. On one machine the same build always runs, so
//! results are reproducible there; across builds they agree to the bounds above.
//! `GRADGUARD_FORCE_PORTABLE=1` forces the portable loop (see [`FORCE_PORTABLE_VAR`]), so CI
//! tests it on machines that have AVX-512. [`active_build`] is the one dispatch decision of
//! every gradguard kernel: the [`multiversion!`](crate::multiversion) macro defined here
//! dispatches the remedies' and the models' kernels on it too.

use std::sync::OnceLock;

/// Elements summed per block before the block sum joins the running total.
pub const BLOCK: usize = 4096;

const LANES: usize = 8;
const EXP_MASK: u32 = 0x7f80_0000;

/// Statistics of one slice: sum of squares (f64), max |x| ignoring NaN, count of non-finite values.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SliceStats {
    /// Sum of x^2 in f64 (NaN or inf when a value is).
    pub sum_sq: f64,
    /// Largest |x|, ignoring NaN (infinite when a value is infinite).
    pub max_abs: f32,
    /// Number of NaN or infinite values.
    pub nonfinite: usize,
}

/// A build of the measuring loop (see the module documentation for the accuracy of each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Build {
    /// AVX-512F/DQ: squares in f32 per sub-block of 1024 values, exact f64 fallback.
    Avx512,
    /// AVX2 + FMA: exact f64 squares.
    Avx2,
    /// Plain Rust, eight f64 lanes: exact f64 squares; runs on every CPU.
    Portable,
}

impl Build {
    /// Every build, fastest first.
    pub const ALL: [Build; 3] = [Build::Avx512, Build::Avx2, Build::Portable];

    /// Whether this CPU can run the build (the portable one always can).
    pub fn is_supported(self) -> bool {
        match self {
            Build::Portable => true,
            #[cfg(target_arch = "x86_64")]
            // Every feature the `multiversion!` Avx512 tier enables (AVX-512F/DQ/VL, AVX2,
            // FMA), so code of both tiers may run here; the measuring kernel needs F and DQ.
            Build::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Build::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Whether the build squares in f64 exactly (relative error of the sum of squares about
    /// `(n / BLOCK + BLOCK / 8) * 2^-53`); the AVX-512 build is within 1.1e-6.
    pub fn is_exact(self) -> bool {
        self != Build::Avx512
    }

    /// Whether a CPU whose [`active_build`] is `self` may run code compiled for `tier`: the
    /// AVX-512 build runs both SIMD tiers, the AVX2 build the AVX2 tier, every build the
    /// portable code. This is what [`multiversion!`](crate::multiversion) asks.
    pub fn covers(self, tier: Build) -> bool {
        match tier {
            Build::Portable => true,
            Build::Avx2 => matches!(self, Build::Avx512 | Build::Avx2),
            Build::Avx512 => self == Build::Avx512,
        }
    }
}

/// Runtime SIMD dispatch, the one pattern of every gradguard kernel: defines a function that
/// runs the best build the CPU offers, chosen by [`active_build`] (detected once per process
/// and cached; [`Build::Portable`] under `GRADGUARD_FORCE_PORTABLE=1`, see
/// [`portable_forced`]).
///
/// # Two forms
/// **Compiled per tier.** The body is compiled once per tier listed in `for [...]` (default:
/// `[Avx512, Avx2]`) with that tier's `#[target_feature]`s, plus once portable; LLVM
/// vectorises each for its instruction set. The body is an `#[inline(always)]` inner function
/// whose slice parameters LLVM treats as non-aliasing.
/// ```
/// gradguard_core::multiversion! {
///     for [Avx2]
///     /// Adds `b` to `a` element by element.
///     pub fn add_assign(a: &mut [f32], b: &[f32]) {
///         for (x, y) in a.iter_mut().zip(b) {
///             *x += *y;
///         }
///     }
/// }
/// let mut a = [1.0f32, 2.0];
/// add_assign(&mut a, &[0.5, 0.5]);
/// assert_eq!(a, [1.5, 2.5]);
/// ```
/// **Hand-written kernels.** Each listed tier calls its own function (explicit intrinsics,
/// `#[cfg(target_arch = "x86_64")]` and `#[target_feature]` at most the tier's features: the
/// `unsafe` in the list is the author's promise of that); `Portable` names the fallback.
/// ```ignore
/// gradguard_core::multiversion! {
///     /// Clamps and measures.
///     pub fn clamp_measure(x: &mut [f32], limit: f32) -> SliceStats;
///     unsafe Avx2 => clamp_measure_avx2,
///     Portable => clamp_measure_body,
/// }
/// ```
/// Tiers are tried in the order listed, so list the widest first.
///
/// # Tiers and their target features
/// - `Avx512`: `avx512f,avx512dq,avx512vl,avx2,fma`, run when the active build is
///   [`Build::Avx512`] (which detects all five).
/// - `Avx2`: `avx2,fma`, run when the active build is [`Build::Avx2`] or [`Build::Avx512`]
///   ([`Build::covers`]).
///
/// Rust never contracts `a * b + c` into an FMA by itself, so a body compiled for any tier
/// gives the same bits as its portable build unless it calls `mul_add` (which is correctly
/// rounded everywhere) or explicit intrinsics.
///
/// # Why a macro of our own and not a crate
/// `multiversion` and `pulp` are both in the registry and well kept, but neither fits:
/// their dispatch decides by CPU features alone, while every gradguard kernel must obey
/// `GRADGUARD_FORCE_PORTABLE=1` (CI runs the portable code on AVX-512 machines) and agree
/// with the measuring kernel's [`Build`], which tests select explicitly
/// ([`slice_stats_on`]) to compare builds; and the measuring and clamping kernels are
/// hand-written intrinsics, which `multiversion`'s attribute only clones and `pulp`'s
/// `WithSimd` would make us rewrite. This macro is ~80 lines with no dependency (core
/// depends on nothing of ours and on no proc-macro), built on the one decision
/// [`active_build`].
#[macro_export]
macro_rules! multiversion {
    // Internal: one tier's build of `inner`, with that tier's target features.
    (@tier Avx512 ($($arg:ident : $ty:ty),*) $(-> $ret:ty)?) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,fma")]
        #[allow(non_snake_case, clippy::too_many_arguments)]
        unsafe fn Avx512($($arg: $ty),*) $(-> $ret)? {
            inner($($arg),*)
        }
    };
    (@tier Avx2 ($($arg:ident : $ty:ty),*) $(-> $ret:ty)?) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        #[allow(non_snake_case, clippy::too_many_arguments)]
        unsafe fn Avx2($($arg: $ty),*) $(-> $ret)? {
            inner($($arg),*)
        }
    };
    // Internal: the builds of every listed tier.
    (@tiers [] $sig:tt $(-> $ret:ty)?) => {};
    (@tiers [$first:ident $(, $rest:ident)*] $sig:tt $(-> $ret:ty)?) => {
        $crate::multiversion!(@tier $first $sig $(-> $ret)?);
        $crate::multiversion!(@tiers [$($rest),*] $sig $(-> $ret)?);
    };
    // Internal: call the first listed tier's function (`$tier => $f`) that `$build` covers.
    (@calls $build:ident [] $args:tt) => {};
    (@calls $build:ident [$tier:ident => $f:ident $(, $rt:ident => $rf:ident)*] ($($arg:ident),*)) => {
        if $build.covers($crate::kernels::Build::$tier) {
            // SAFETY: the active build covers this tier, so the CPU has every feature the
            // tier's function enables (generated per tier, or promised by the `unsafe` of a
            // hand-written kernel's entry).
            return unsafe { $f($($arg),*) };
        }
        $crate::multiversion!(@calls $build [$($rt => $rf),*] ($($arg),*));
    };
    // Hand-written kernels per tier.
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty;
        $(unsafe $tier:ident => $kernel:ident,)+
        Portable => $portable:ident $(,)?
    ) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                let build = $crate::kernels::active_build();
                $crate::multiversion!(@calls build [$($tier => $kernel),+] ($($arg),*));
            }
            $portable($($arg),*)
        }
    };
    // Compiled per tier, the tiers given.
    (
        for [$($tier:ident),+ $(,)?]
        $(#[$meta:meta])*
        $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
    ) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn inner($($arg: $ty),*) $(-> $ret)? $body

            $crate::multiversion!(@tiers [$($tier),+] ($($arg: $ty),*) $(-> $ret)?);

            #[cfg(target_arch = "x86_64")]
            {
                let build = $crate::kernels::active_build();
                $crate::multiversion!(@calls build [$($tier => $tier),+] ($($arg),*));
            }
            inner($($arg),*)
        }
    };
    // Compiled per tier, both SIMD tiers.
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
    ) => {
        $crate::multiversion! {
            for [Avx512, Avx2]
            $(#[$meta])*
            $vis fn $name($($arg: $ty),*) $(-> $ret)? $body
        }
    };
}

/// Name of the environment variable that forces the portable build when set to `1`.
///
/// `GRADGUARD_FORCE_PORTABLE=1` makes every runtime dispatch (these kernels, and the remedies'
/// kernels) take the portable loop whatever the CPU offers, so that one machine can test the
/// portable path. It is read once per process (the first time a kernel dispatches) and
/// cached; changing it afterwards has no effect.
pub const FORCE_PORTABLE_VAR: &str = "GRADGUARD_FORCE_PORTABLE";

/// Whether `GRADGUARD_FORCE_PORTABLE=1` was set when the process first asked (read once, then
/// cached: each later call is one atomic load).
pub fn portable_forced() -> bool {
    static FORCED: OnceLock<bool> = OnceLock::new();
    *FORCED.get_or_init(|| forces_portable(std::env::var_os(FORCE_PORTABLE_VAR).as_deref()))
}

/// Whether a value of `GRADGUARD_FORCE_PORTABLE` forces the portable build: exactly `1`.
fn forces_portable(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| v == "1")
}

/// The build that [`slice_stats`] and [`grad_and_weight_stats`] run: the fastest one this CPU
/// supports, or [`Build::Portable`] under `GRADGUARD_FORCE_PORTABLE=1`. Decided once per
/// process and cached.
pub fn active_build() -> Build {
    static ACTIVE: OnceLock<Build> = OnceLock::new();
    *ACTIVE.get_or_init(|| {
        if portable_forced() {
            return Build::Portable;
        }
        Build::ALL
            .into_iter()
            .find(|b| b.is_supported())
            .unwrap_or(Build::Portable)
    })
}

/// The builds this CPU supports (always including [`Build::Portable`]), for tests that
/// compare every build; ignores `GRADGUARD_FORCE_PORTABLE`.
pub fn supported_builds() -> Vec<Build> {
    Build::ALL
        .into_iter()
        .filter(|b| b.is_supported())
        .collect()
}

#[inline]
fn isa() -> Build {
    active_build()
}

/// Sum of squares and max |x| of a whole slice, with the build chosen for `isa` (a
/// [`StatsStream`] fed the whole slice at once, so both give the same bits).
fn sum_sq_max(x: &[f32], isa: Build) -> (f64, f32) {
    let mut st = StatsStream::with_build(isa);
    st.advance(x);
    st.sum_sq_max(x)
}

/// Measures a slice that is being written front to back, piece by piece, while each piece is
/// still in the cache (e.g. a gradient computed in row blocks), and gives exactly what
/// [`slice_stats`] gives on the finished slice: the same bits, because `slice_stats` runs this
/// same code on the whole slice at once.
///
/// Call [`StatsStream::advance`] with the prefix written so far (always the same buffer, a
/// longer prefix each time), then [`StatsStream::finish`] with the whole slice. Each call
/// measures the whole blocks that became final (1024 values for the AVX-512 build, [`BLOCK`]
/// for the others); the rest waits for the next call. No allocation.
#[derive(Clone, Debug)]
pub struct StatsStream {
    isa: Build,
    /// Values measured so far (a whole number of blocks).
    done: usize,
    /// Exact builds: running Σ x² over the blocks so far; AVX-512: the exact fallback's sum.
    sum: f64,
    /// Exact builds: running max |x|; AVX-512: the exact fallback's max.
    max: f32,
    /// AVX-512: the f64 lane sums of the low and high halves, and the lane maxima.
    lanes_lo: [f64; 8],
    lanes_hi: [f64; 8],
    lane_max: [f32; 16],
}

impl Default for StatsStream {
    fn default() -> Self {
        Self::new()
    }
}

impl StatsStream {
    /// A stream for the active build ([`active_build`]), as [`slice_stats`] uses.
    pub fn new() -> Self {
        Self::with_build(isa())
    }

    fn with_build(isa: Build) -> Self {
        StatsStream {
            isa,
            done: 0,
            sum: 0.0,
            max: 0.0,
            lanes_lo: [0.0; 8],
            lanes_hi: [0.0; 8],
            lane_max: [0.0; 16],
        }
    }

    /// Values per block of this stream's build.
    fn block(&self) -> usize {
        if self.isa == Build::Avx512 {
            SUB
        } else {
            BLOCK
        }
    }

    /// Measures the whole blocks of `prefix` not measured yet. `prefix` is the start of the
    /// slice being measured (its values final), at least as long as at the last call.
    pub fn advance(&mut self, prefix: &[f32]) {
        let b = self.block();
        let end = prefix.len() / b * b;
        if end <= self.done {
            return;
        }
        let fresh = &prefix[self.done..end];
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: Avx512 streams are made only from `active_build()` or `slice_stats_on`,
            // which both checked that the CPU has AVX-512F and DQ.
            Build::Avx512 => unsafe { self.avx512_subblocks(fresh) },
            isa => {
                for block in fresh.chunks_exact(BLOCK) {
                    let (s, m) = match isa {
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: as above, Avx2 streams exist only where AVX2 and FMA were found.
                        Build::Avx2 => unsafe { sum_sq_max_avx2(block) },
                        _ => sum_sq_max_portable(block),
                    };
                    self.sum += s;
                    self.max = max_ignoring_nan(m, self.max);
                }
            }
        }
        self.done = end;
    }

    /// Measures the rest of `x` (the whole slice, whose start was fed to
    /// [`StatsStream::advance`]) and returns the statistics of all of it: the same as
    /// [`slice_stats`]`(x)`.
    pub fn finish(mut self, x: &[f32]) -> SliceStats {
        self.advance(x);
        let (sum_sq, max_abs) = self.sum_sq_max(x);
        SliceStats::from_sum_and_max(x, sum_sq, max_abs)
    }

    /// The sum of squares and max |x| of `x`, whose whole blocks were all fed already.
    fn sum_sq_max(&self, x: &[f32]) -> (f64, f32) {
        let tail = &x[self.done.min(x.len())..];
        #[cfg(target_arch = "x86_64")]
        if self.isa == Build::Avx512 {
            let (s, m) = sum_sq_max_portable(tail);
            // SAFETY: as in `advance`, this stream's build was checked to be supported.
            let (lanes, fast_max) = unsafe { self.avx512_reduce() };
            return (
                lanes + self.sum + s,
                max_ignoring_nan(m, max_ignoring_nan(self.max, fast_max)),
            );
        }
        if tail.is_empty() {
            return (self.sum, self.max);
        }
        let (s, m) = match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `advance`.
            Build::Avx2 => unsafe { sum_sq_max_avx2(tail) },
            _ => sum_sq_max_portable(tail),
        };
        (self.sum + s, max_ignoring_nan(m, self.max))
    }
}

/// Largest of `m` and `a`, ignoring NaN in `a` (the semantics of `maxps(a, m)`).
#[inline(always)]
fn max_ignoring_nan(a: f32, m: f32) -> f32 {
    if a > m {
        a
    } else {
        m
    }
}

#[inline(always)]
fn sum_sq_max_portable(x: &[f32]) -> (f64, f32) {
    let mut acc = [0.0f64; LANES];
    let mut mx = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            let d = c[l] as f64;
            acc[l] += d * d;
            mx[l] = max_ignoring_nan(c[l].abs(), mx[l]);
        }
    }
    for (l, &v) in rest.iter().enumerate() {
        let d = v as f64;
        acc[l] += d * d;
        mx[l] = max_ignoring_nan(v.abs(), mx[l]);
    }
    (
        acc.iter().sum(),
        mx.iter().fold(0.0f32, |m, &a| max_ignoring_nan(a, m)),
    )
}

/// Sub-blocks of the AVX-512 build: f32 lane sums are flushed into f64 every this many values.
const SUB: usize = 1024;
/// Sub-blocks whose max |x| lies in [`F32_LOW`, `F32_HIGH`] (or is 0) are squared in f32.
const F32_LOW: f32 = f32::from_bits((127 - 50) << 23); // 2^-50
const F32_HIGH: f32 = f32::from_bits((127 + 60) << 23); // 2^60

/// The AVX-512 build: squares in f32, 64 values per iteration (four 16-lane FMA
/// accumulators; max |x| as the unsigned integer max of the bits with the sign cleared, which
/// runs on the integer pipes beside the FMAs: `vrangeps` in its place measured 40% slower on
/// an AMD EPYC, where it competes with them). After each sub-block of
/// [`SUB`] values its four accumulators are added pairwise (each lane then holds 16 squares and
/// two pairwise sums: relative error below 18 * 2^-24 = 1.1e-6), widened and added into
/// sixteen f64 lanes, which are reduced once at the end ([`StatsStream::avx512_reduce`]). A
/// sub-block whose max |x| is outside [2^-50, 2^60] (its squares could overflow f32, or lose
/// precision below f32's normal range), or is NaN, is summed again exactly in f64 by the
/// portable loop; so is the tail. The range test uses vector compares, so a sub-block costs no
/// horizontal reduction. It needs no f32 -> f64 conversion per value, which is what bounds the
/// exact loop (about half the speed).
#[cfg(target_arch = "x86_64")]
impl StatsStream {
    /// Feeds whole sub-blocks (`x.len()` a multiple of [`SUB`]) into the lanes.
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn avx512_subblocks(&mut self, x: &[f32]) {
        use std::arch::x86_64::*;
        let (low, high, zero) = (
            _mm512_set1_ps(F32_LOW),
            _mm512_set1_ps(F32_HIGH),
            _mm512_setzero_ps(),
        );
        let abs = _mm512_set1_epi32(0x7fff_ffff);
        // SAFETY: the arrays hold exactly 8 doubles, 8 doubles and 16 floats.
        let (mut total_lo, mut total_hi, mut max_all) = unsafe {
            (
                _mm512_loadu_pd(self.lanes_lo.as_ptr()),
                _mm512_loadu_pd(self.lanes_hi.as_ptr()),
                _mm512_loadu_ps(self.lane_max.as_ptr()),
            )
        };
        // sub-blocks that took the exact path
        let (mut exact_sum, mut exact_max) = (self.sum, self.max);
        for sub in x.chunks_exact(SUB) {
            let p = sub.as_ptr();
            let (mut a0, mut a1, mut a2, mut a3) = (zero, zero, zero, zero);
            let (mut m0, mut m1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            let mut i = 0;
            while i < SUB {
                // SAFETY: i + 64 <= SUB = sub.len(), so the four 16-float loads are in bounds.
                let (v0, v1, v2, v3) = unsafe {
                    (
                        _mm512_loadu_ps(p.add(i)),
                        _mm512_loadu_ps(p.add(i + 16)),
                        _mm512_loadu_ps(p.add(i + 32)),
                        _mm512_loadu_ps(p.add(i + 48)),
                    )
                };
                a0 = _mm512_fmadd_ps(v0, v0, a0);
                a1 = _mm512_fmadd_ps(v1, v1, a1);
                a2 = _mm512_fmadd_ps(v2, v2, a2);
                a3 = _mm512_fmadd_ps(v3, v3, a3);
                // max |x| on the integer pipes: with the sign bit cleared, the bits of
                // non-negative floats order as their values (a NaN orders above infinity, and
                // such a sub-block takes the exact path below)
                let bits = |v: __m512| _mm512_and_si512(_mm512_castps_si512(v), abs);
                m0 = _mm512_max_epu32(_mm512_max_epu32(bits(v0), bits(v1)), m0);
                m1 = _mm512_max_epu32(_mm512_max_epu32(bits(v2), bits(v3)), m1);
                i += 64;
            }
            let m = _mm512_castsi512_ps(_mm512_max_epu32(m0, m1));
            // lanes that are not <= 2^60 (larger, or NaN: the compare is ordered)
            let above = !_mm512_cmp_ps_mask::<_CMP_LE_OQ>(m, high);
            // the max is in (0, 2^-50): every lane is below 2^-50 and some lane is not 0
            let tiny = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(m, low) == 0xffff
                && _mm512_cmp_ps_mask::<_CMP_GT_OQ>(m, zero) != 0;
            if above == 0 && !tiny {
                let s = _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
                total_lo = _mm512_add_pd(total_lo, _mm512_cvtps_pd(_mm512_castps512_ps256(s)));
                total_hi = _mm512_add_pd(
                    total_hi,
                    _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
                        _mm512_castps_pd(s),
                    ))),
                );
                // every lane of `m` is finite here, so its bits order as its values
                max_all = _mm512_castsi512_ps(_mm512_max_epu32(
                    _mm512_castps_si512(max_all),
                    _mm512_castps_si512(m),
                ));
            } else {
                let (s, m) = sum_sq_max_portable(sub);
                exact_sum += s;
                exact_max = max_ignoring_nan(m, exact_max);
            }
        }
        // SAFETY: as above.
        unsafe {
            _mm512_storeu_pd(self.lanes_lo.as_mut_ptr(), total_lo);
            _mm512_storeu_pd(self.lanes_hi.as_mut_ptr(), total_hi);
            _mm512_storeu_ps(self.lane_max.as_mut_ptr(), max_all);
        }
        (self.sum, self.max) = (exact_sum, exact_max);
    }

    /// The sum of the f64 lanes and the max of the lane maxima.
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn avx512_reduce(&self) -> (f64, f32) {
        use std::arch::x86_64::*;
        // SAFETY: the arrays hold exactly 8 doubles, 8 doubles and 16 floats.
        let (lo, hi, mx) = unsafe {
            (
                _mm512_loadu_pd(self.lanes_lo.as_ptr()),
                _mm512_loadu_pd(self.lanes_hi.as_ptr()),
                _mm512_loadu_ps(self.lane_max.as_ptr()),
            )
        };
        (
            _mm512_reduce_add_pd(_mm512_add_pd(lo, hi)),
            _mm512_reduce_max_ps(mx),
        )
    }
}

/// The AVX2 build: exact f64 squares, 16 values per iteration, four accumulators of four
/// doubles (AVX2 has no cheap max-|x| instruction, and f32 lanes would not be much faster).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sum_sq_max_avx2(x: &[f32]) -> (f64, f32) {
    use std::arch::x86_64::*;
    let n = x.len();
    let p = x.as_ptr();
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let (mut a0, mut a1, mut a2, mut a3) = (
        _mm256_setzero_pd(),
        _mm256_setzero_pd(),
        _mm256_setzero_pd(),
        _mm256_setzero_pd(),
    );
    let (mut m0, mut m1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n, so both 8-float loads are in bounds.
        let (v0, v1) = unsafe { (_mm256_loadu_ps(p.add(i)), _mm256_loadu_ps(p.add(i + 8))) };
        let l0 = _mm256_cvtps_pd(_mm256_castps256_ps128(v0));
        let h0 = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v0));
        let l1 = _mm256_cvtps_pd(_mm256_castps256_ps128(v1));
        let h1 = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v1));
        a0 = _mm256_fmadd_pd(l0, l0, a0);
        a1 = _mm256_fmadd_pd(h0, h0, a1);
        a2 = _mm256_fmadd_pd(l1, l1, a2);
        a3 = _mm256_fmadd_pd(h1, h1, a3);
        m0 = _mm256_max_ps(_mm256_and_ps(v0, abs_mask), m0);
        m1 = _mm256_max_ps(_mm256_and_ps(v1, abs_mask), m1);
        i += 16;
    }
    let acc = _mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3));
    let mut lanes = [0.0f64; 4];
    // SAFETY: `lanes` holds exactly four doubles.
    unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), acc) };
    let mut sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    let mut maxes = [0.0f32; 8];
    // SAFETY: `maxes` holds exactly eight floats.
    unsafe { _mm256_storeu_ps(maxes.as_mut_ptr(), _mm256_max_ps(m0, m1)) };
    let mut mx = maxes.iter().fold(0.0f32, |m, &a| max_ignoring_nan(a, m));
    for &v in &x[i..] {
        let d = v as f64;
        sum += d * d;
        mx = max_ignoring_nan(v.abs(), mx);
    }
    (sum, mx)
}

/// Number of NaN or infinite values (by their exponent bits).
pub fn count_nonfinite(x: &[f32]) -> usize {
    x.iter()
        .filter(|v| (v.to_bits() & EXP_MASK) == EXP_MASK)
        .count()
}

/// [`slice_stats`] with a chosen build, for tests that compare builds.
///
/// # Panics
/// When this CPU does not support `build` ([`Build::is_supported`]).
pub fn slice_stats_on(x: &[f32], build: Build) -> SliceStats {
    assert!(
        build.is_supported(),
        "the {build:?} build is not supported by this CPU"
    );
    slice_stats_with(x, build)
}

fn slice_stats_with(x: &[f32], isa: Build) -> SliceStats {
    let (sum_sq, max_abs) = sum_sq_max(x, isa);
    SliceStats::from_sum_and_max(x, sum_sq, max_abs)
}

impl SliceStats {
    /// The statistics of `x` given its sum of squares and max |x|: the non-finite values are
    /// counted only when the sum is not finite (finite values always give a finite sum).
    fn from_sum_and_max(x: &[f32], sum_sq: f64, max_abs: f32) -> Self {
        let nonfinite = if sum_sq.is_finite() {
            0
        } else {
            count_nonfinite(x)
        };
        SliceStats {
            sum_sq,
            max_abs,
            nonfinite,
        }
    }
}

/// Sum of squares, max |x| and non-finite count of `x`, in one read pass (a second one only
/// when a value is NaN or infinite).
pub fn slice_stats(x: &[f32]) -> SliceStats {
    slice_stats_with(x, isa())
}

/// Statistics of the gradients and weights of one tensor.
/// Returns `(grad stats, weight sum of squares, weight non-finite count)`.
pub fn grad_and_weight_stats(grads: &[f32], weights: &[f32]) -> (SliceStats, f64, usize) {
    let isa = isa();
    let w = slice_stats_with(weights, isa);
    (slice_stats_with(grads, isa), w.sum_sq, w.nonfinite)
}

/// Multiplies every value by `c` in place.
pub fn scale_in_place(x: &mut [f32], c: f32) {
    for v in x.iter_mut() {
        *v *= c;
    }
}

/// Multiplies every value by `c` in place, in one read-and-write pass: the kernel every
/// rescaling remedy uses (through [`crate::RemedyContext::scale_all`] and
/// [`crate::RemedyContext::scale_param`]).
///
/// The product is taken in f32 when `c` is a normal f32 (or 0, 1, NaN: the IEEE rules
/// apply, so `inf * 0` is NaN as in PyTorch); a coefficient below f32's smallest normal
/// (1.2e-38, which happens when clipping a norm near 1e38 to 1) is applied in f64 so that
/// no precision is lost to subnormal rounding. [`applied_factor`] says which factor that is.
pub fn scale(x: &mut [f32], c: f64) {
    scale_dispatch(x, c)
}

multiversion! {
    for [Avx2]
    /// [`scale`], dispatched ([`multiversion!`](crate::multiversion)).
    fn scale_dispatch(x: &mut [f32], c: f64) {
        scale_body(x, c)
    }
}

#[inline(always)]
fn scale_body(x: &mut [f32], c: f64) {
    let c32 = c as f32;
    if needs_f64(c) {
        for v in x.iter_mut() {
            *v = (*v as f64 * c) as f32;
        }
    } else {
        for v in x.iter_mut() {
            *v *= c32;
        }
    }
}

/// The f64 factor that [`scale`] really applies for `c` (f32-rounded when it multiplies in f32).
pub fn applied_factor(c: f64) -> f64 {
    if needs_f64(c) {
        c
    } else {
        c as f32 as f64
    }
}

/// Whether `c` loses precision (or range) as an f32 factor.
#[inline]
fn needs_f64(c: f64) -> bool {
    let c32 = c as f32;
    (c32 == 0.0 && c != 0.0) || c32.is_subnormal() || (c.is_finite() && !c32.is_finite())
}

/// Sets every non-finite value to 0 in place; returns how many were replaced.
pub fn zero_nonfinite(x: &mut [f32]) -> usize {
    let mut n = 0;
    for v in x.iter_mut() {
        if !v.is_finite() {
            *v = 0.0;
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_1_forces_the_portable_build() {
        use std::ffi::OsStr;
        assert!(forces_portable(Some(OsStr::new("1"))));
        for v in ["0", "", "true", "yes", " 1"] {
            assert!(!forces_portable(Some(OsStr::new(v))), "{v:?}");
        }
        assert!(!forces_portable(None));
        // This process: CI runs the suite once with the variable set (docs/TESTING.md).
        if portable_forced() {
            assert_eq!(active_build(), Build::Portable);
        } else {
            let best = Build::ALL.into_iter().find(|b| b.is_supported()).unwrap();
            assert_eq!(active_build(), best);
        }
    }

    #[test]
    fn exactness_is_declared_per_build() {
        // The tolerance every accuracy test picks follows from this: the exact builds square
        // in f64, the AVX-512 build in f32 per sub-block.
        assert!(Build::Portable.is_exact());
        assert!(Build::Avx2.is_exact());
        assert!(!Build::Avx512.is_exact());
        assert!(Build::Portable.is_supported());
    }

    #[test]
    fn hand_computed() {
        let s = slice_stats(&[3.0, -4.0]);
        assert_eq!(
            s,
            SliceStats {
                sum_sq: 25.0,
                max_abs: 4.0,
                nonfinite: 0
            }
        );
        let s = slice_stats(&[]);
        assert_eq!(s, SliceStats::default());
        let s = slice_stats(&[1.0, f32::NAN, f32::INFINITY, -2.0, f32::NEG_INFINITY]);
        assert_eq!(s.nonfinite, 3);
        assert_eq!(s.max_abs, f32::INFINITY);
        assert!(s.sum_sq.is_nan());
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let x = vec![1e30f32; 1000];
        let s = slice_stats(&x);
        let norm = s.sum_sq.sqrt();
        let expected = (1e30f32 as f64) * (1000f64).sqrt();
        assert!(
            ((norm - expected) / expected).abs() < 1e-12,
            "{norm} vs {expected}"
        );
        let s = slice_stats(&[f32::MAX, f32::MAX]);
        assert!(s.sum_sq.is_finite());
    }

    #[test]
    fn grad_and_weight_stats_match_separate_passes() {
        let g: Vec<f32> = (0..10_007)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01)
            .collect();
        let mut w: Vec<f32> = (0..10_007)
            .map(|i| ((i * 13 % 97) as f32 - 48.0) * 0.1)
            .collect();
        let (gs, wsq, wbad) = grad_and_weight_stats(&g, &w);
        let gs2 = slice_stats(&g);
        let ws2 = slice_stats(&w);
        assert_eq!(gs, gs2);
        assert_eq!(wsq, ws2.sum_sq);
        assert_eq!(wbad, 0);
        w[17] = f32::NAN;
        w[10_000] = f32::NEG_INFINITY;
        assert_eq!(grad_and_weight_stats(&g, &w).2, 2);
    }

    /// Every build available on this CPU against an f64 reference computed term by term, on
    /// lengths that leave every tail size, with NaN and infinities at the edges of the vector
    /// loops.
    #[test]
    fn every_build_agrees_with_the_f64_reference() {
        let builds = supported_builds();
        eprintln!("kernel builds covered: {builds:?}");
        assert!(builds.contains(&Build::Portable));
        for n in [
            0usize, 1, 7, 15, 16, 17, 31, 32, 33, 63, 100, 1023, 1024, 1025, 2111, 4095, 4096,
            4097, 9001,
        ] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1.7e-3)
                .collect();
            let reference: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
            let max = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for &isa in &builds {
                let s = slice_stats_with(&x, isa);
                // the AVX-512 build squares in f32 (16 squares per lane before f64)
                let tolerance = if isa == Build::Avx512 { 1e-6 } else { 1e-13 };
                assert!(
                    (s.sum_sq - reference).abs() <= tolerance * reference,
                    "{isa:?} n={n}: {} vs {reference}",
                    s.sum_sq
                );
                assert_eq!(s.max_abs, max, "{isa:?} n={n}");
                assert_eq!(s.nonfinite, 0);
                for (pos, bad) in [
                    (0, f32::NAN),
                    (n / 2, f32::INFINITY),
                    (n.wrapping_sub(1), f32::NAN),
                ] {
                    if pos >= n {
                        continue;
                    }
                    let mut y = x.clone();
                    y[pos] = bad;
                    let s = slice_stats_with(&y, isa);
                    assert_eq!(s.nonfinite, 1, "{isa:?} n={n} pos={pos}");
                    assert!(!s.sum_sq.is_finite());
                    if bad.is_nan() {
                        // NaN is ignored by the maximum (the others are unchanged or smaller)
                        assert!(s.max_abs <= max && s.max_abs.is_finite(), "{isa:?} n={n}");
                    } else {
                        assert_eq!(s.max_abs, f32::INFINITY);
                    }
                }
            }
        }
    }

    /// Values whose squares leave f32's normal range are summed exactly in f64 by every
    /// build (the AVX-512 build falls back per sub-block), and mixing them with ordinary
    /// values in one slice keeps each sub-block's own path.
    #[test]
    fn f32_range_bounds_are_the_documented_powers_of_two() {
        assert_eq!(F32_LOW as f64, 2f64.powi(-50));
        assert_eq!(F32_HIGH as f64, 2f64.powi(60));
    }

    #[test]
    fn tiny_and_huge_values_keep_full_precision() {
        for scale in [1e-30f32, 1e-20, 1e19, 1e25, 1e30] {
            let x: Vec<f32> = (0..3000)
                .map(|i| ((i * 31 % 97) as f32 + 1.0) * scale)
                .collect();
            let reference: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
            let s = slice_stats(&x);
            assert!(
                (s.sum_sq - reference).abs() <= 1e-13 * reference,
                "scale {scale}: {} vs {reference}",
                s.sum_sq
            );
            assert!(s.sum_sq > 0.0 && s.sum_sq.is_finite());
        }
        // one ordinary sub-block then one of huge values
        let mut x = vec![0.5f32; 2048];
        x[1024..].iter_mut().for_each(|v| *v = 1e30);
        let reference = 1024.0 * 0.25 + 1024.0 * (1e30f32 as f64).powi(2);
        let s = slice_stats(&x);
        assert!((s.sum_sq - reference).abs() <= 1e-13 * reference);
        assert_eq!(s.max_abs, 1e30);
    }

    /// Neumaier-compensated f64 sum of the exact f64 squares: a reference whose own error
    /// (about 2^-53 relative) is far below every build's bound.
    fn reference_sum_sq(x: &[f32]) -> f64 {
        let (mut sum, mut comp) = (0.0f64, 0.0f64);
        for &v in x {
            let sq = v as f64 * v as f64;
            let t = sum + sq;
            comp += if sum.abs() >= sq.abs() {
                (sum - t) + sq
            } else {
                (sq - t) + sum
            };
            sum = t;
        }
        sum + comp
    }

    /// The documented relative bound of the sum of squares for `build` over `n` values:
    /// `(n / BLOCK + BLOCK / 8) * 2^-53` (plus a few roundings of the final reductions) for the
    /// exact builds, `18 * 2^-24 < 1.1e-6` for the AVX-512 build.
    fn documented_bound(build: Build, n: usize) -> f64 {
        if build.is_exact() {
            (n as f64 / BLOCK as f64 + BLOCK as f64 / 8.0 + 8.0) * 2f64.powi(-53)
        } else {
            1.1e-6
        }
    }

    /// Segments of one magnitude class each, so that some 1024-value sub-blocks take the
    /// AVX-512 f32 path and others its exact fallback: ordinary values, values near 2^60 (on
    /// both sides of the fallback switch), near 2^-50 (both sides), zeros, and mixed signs.
    fn segmented_values() -> impl Strategy<Value = Vec<f32>> {
        // Octave tops around the switch points: squares of a whole sub-block near 2^62 overflow
        // f32 lane sums, and near 2^-69 they are subnormal (errors above 1e-6).
        const HIGH_E: [f64; 8] = [58.0, 59.0, 60.0, 61.0, 62.0, 63.0, 64.0, 66.0];
        const LOW_E: [f64; 11] = [
            -75.0, -72.0, -70.0, -69.0, -68.0, -64.0, -63.0, -51.0, -50.0, -49.0, -48.0,
        ];
        prop::collection::vec((0u8..5, 1usize..2600, any::<u64>()), 1..7).prop_map(|segs| {
            let mut out = Vec::new();
            for (class, len, seed) in segs {
                let mut state = seed | 1;
                for _ in 0..len {
                    // xorshift64*: cheap deterministic values from the proptest seed
                    state ^= state >> 12;
                    state ^= state << 25;
                    state ^= state >> 27;
                    let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
                    let unit = (r >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
                    let sign = if r & 1 == 0 { 1.0 } else { -1.0 };
                    let v = match class {
                        0 => sign * unit * 3.0,
                        // one octave [2^(e-1), 2^e] per segment, e in 58..=66: a sub-block
                        // whose max passes 2^60 falls back (its f32 lane sums of 64 squares
                        // could overflow); below, the f32 path must stay within its bound
                        1 => sign * 2f64.powf(HIGH_E[(seed % 8) as usize] - unit),
                        // e in -75..=-48: a sub-block whose max is below 2^-50 falls back
                        // (below 2^-63 the f32 squares would be subnormal)
                        2 => sign * 2f64.powf(LOW_E[(seed % 11) as usize] - unit),
                        3 => 0.0,
                        _ => sign * 2f64.powf(-60.0 + 120.0 * unit),
                    };
                    out.push(v as f32);
                }
            }
            out
        })
    }

    /// The values, and occasionally (one case in six) one NaN or infinity at a random place.
    fn poisoned() -> impl Strategy<Value = (Vec<f32>, Option<(usize, u8)>)> {
        (
            segmented_values(),
            prop::option::weighted(1.0 / 6.0, (any::<usize>(), 0u8..3)),
        )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 128,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Random lengths past 1024 (AVX-512 sub-blocks) and 4096 (exact blocks), magnitudes
        /// on both sides of 2^60 and 2^-50, mixed signs and occasional NaN/inf: every build this
        /// CPU supports against the compensated f64 reference, within its documented bound.
        #[test]
        fn every_build_on_random_data((mut x, poison) in poisoned()) {
            let builds = supported_builds();
            assert!(builds.contains(&Build::Portable));
            let n = x.len();
            if let Some((i, kind)) = poison {
                if n > 0 {
                    x[i % n] = match kind { 0 => f32::NAN, 1 => f32::INFINITY, _ => f32::NEG_INFINITY };
                }
            }
            let bad = x.iter().filter(|v| !v.is_finite()).count();
            let max = x.iter().fold(0.0f32, |m, &v| max_ignoring_nan(v.abs(), m));
            let reference = reference_sum_sq(&x);
            for &build in &builds {
                let s = slice_stats_on(&x, build);
                prop_assert_eq!(s.nonfinite, bad, "{:?} n={}", build, n);
                prop_assert_eq!(s.max_abs, max, "{:?} n={}", build, n);
                if bad > 0 {
                    prop_assert!(!s.sum_sq.is_finite(), "{:?}: finite sum with {} non-finite", build, bad);
                } else {
                    let bound = documented_bound(build, n);
                    prop_assert!(
                        (s.sum_sq - reference).abs() <= bound * reference,
                        "{:?} n={}: {} vs {} (rel {:e} > {:e})",
                        build, n, s.sum_sq, reference,
                        (s.sum_sq - reference).abs() / reference, bound
                    );
                }
            }
        }
    }

    #[test]
    fn random_data_test_reports_its_builds() {
        // Printed for --nocapture: which builds the random-data property test compared.
        let builds = supported_builds();
        eprintln!(
            "kernel builds covered on random data: {builds:?}; active build {:?}{}",
            active_build(),
            if portable_forced() {
                " (GRADGUARD_FORCE_PORTABLE=1)"
            } else {
                ""
            }
        );
        assert!(builds.contains(&Build::Portable));
        assert!(builds.contains(&active_build()));
    }

    #[test]
    fn force_portable_selects_the_portable_build() {
        let forced = std::env::var_os(FORCE_PORTABLE_VAR).is_some_and(|v| v == "1");
        assert_eq!(portable_forced(), forced);
        let expect = if forced {
            Build::Portable
        } else {
            supported_builds()[0]
        };
        eprintln!(
            "active build {:?} (forced portable: {forced})",
            active_build()
        );
        assert_eq!(active_build(), expect);
        // slice_stats runs the active build: same bits as asking for it explicitly
        let x: Vec<f32> = (0..5000).map(|i| (i as f32 * 0.37).sin() * 1e3).collect();
        assert_eq!(
            slice_stats(&x).sum_sq.to_bits(),
            slice_stats_on(&x, expect).sum_sq.to_bits()
        );
    }

    /// A slice fed to a [`StatsStream`] in pieces of any size (as a gradient written block
    /// by block) gives exactly the bits of `slice_stats` on the whole slice, on every build,
    /// with NaN and infinities too.
    #[test]
    fn stream_in_pieces_gives_the_bits_of_one_pass() {
        let builds = supported_builds();
        for n in [0usize, 5, 1000, 1024, 4096, 4097, 10_007, 200_704] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1.7e-3)
                .collect();
            let mut poisoned = x.clone();
            if n > 2 {
                poisoned[n / 3] = f32::NAN;
                poisoned[n - 1] = f32::NEG_INFINITY;
            }
            let mut huge = x.clone();
            if n > 0 {
                huge[n / 2] = 1e30; // one sub-block takes the exact path
            }
            for x in [&x, &poisoned, &huge] {
                for &build in &builds {
                    let whole = slice_stats_on(x, build);
                    for piece in [1usize, 777, 1024, 4704, 6144] {
                        let mut st = StatsStream::with_build(build);
                        let mut end = 0;
                        while end < n {
                            end = (end + piece).min(n);
                            st.advance(&x[..end]);
                        }
                        let s = st.finish(x);
                        assert_eq!(
                            s.sum_sq.to_bits(),
                            whole.sum_sq.to_bits(),
                            "{build:?} n={n} piece={piece}"
                        );
                        assert_eq!(
                            s.max_abs.to_bits(),
                            whole.max_abs.to_bits(),
                            "{build:?} n={n}"
                        );
                        assert_eq!(s.nonfinite, whole.nonfinite, "{build:?} n={n}");
                    }
                }
            }
        }
    }

    #[test]
    fn zeroes_nonfinite() {
        let mut x = [1.0, f32::NAN, -f32::INFINITY, 2.0];
        assert_eq!(zero_nonfinite(&mut x), 2);
        assert_eq!(x, [1.0, 0.0, 0.0, 2.0]);
    }

    /// Which builds may run which tier's code: the safety contract of every
    /// [`multiversion!`](crate::multiversion) dispatch (a wrong `true` would run AVX-512
    /// instructions on a CPU that has only AVX2).
    #[test]
    fn covers_is_the_documented_table() {
        use Build::{Avx2, Avx512, Portable};
        // rows: the active build; columns: the tiers Avx512, Avx2, Portable
        let table = [
            (Avx512, [true, true, true]),
            (Avx2, [false, true, true]),
            (Portable, [false, false, true]),
        ];
        for (build, row) in table {
            for (tier, expect) in [Avx512, Avx2, Portable].into_iter().zip(row) {
                assert_eq!(build.covers(tier), expect, "{build:?} covers {tier:?}");
            }
        }
    }

    /// `GRADGUARD_FORCE_PORTABLE=1` forces the portable build in a process that starts with
    /// it: this test binary is run again with the variable set, on the test that checks
    /// `portable_forced` and the active build against the variable. (The variable is read once
    /// per process, so it cannot be set from inside this one.)
    #[test]
    fn the_variable_forces_the_portable_build_in_a_fresh_process() {
        if std::env::var_os(FORCE_PORTABLE_VAR).is_some() {
            // already the forced run (CI's second step, or the child below): the test named
            // below checks this process itself
            return;
        }
        let test = "kernels::tests::force_portable_selects_the_portable_build";
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(FORCE_PORTABLE_VAR, "1")
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{stdout}\n{stderr}");
        // the child ran that one test (a renamed test would pass vacuously otherwise)
        assert!(stdout.contains("1 passed"), "{stdout}");
        assert!(
            stderr.contains("active build Portable (forced portable: true)"),
            "{stderr}"
        );
    }

    /// The AVX-512 build squares ordinary sub-blocks in f32 (the speed the module documents),
    /// the exact builds in f64, seen where the two round differently: x = 1 + 2^-12, whose
    /// square 1 + 2^-11 + 2^-24 needs 25 significand bits. In f32 each lane's first square
    /// rounds to 1 + 2^-11 (a tie, to even) and each later sum, above 2, drops its 2^-24 (below
    /// half an ulp), so each of the 64 lanes holds 16 * (1 + 2^-11) and 1024 values give
    /// 1024 * (1 + 2^-11) = 1024.5. In f64 every square and partial sum is exact:
    /// 1024.5 + 1024 * 2^-24 = 1024.5 + 2^-14.
    #[test]
    fn the_avx512_build_squares_ordinary_sub_blocks_in_f32() {
        let x = vec![1.0f32 + 2f32.powi(-12); 1024];
        let exact = 1024.5 + 2f64.powi(-14);
        for build in supported_builds() {
            let s = slice_stats_on(&x, build);
            let expect = if build.is_exact() { exact } else { 1024.5 };
            assert_eq!(s.sum_sq, expect, "{build:?}");
            assert_eq!(s.max_abs, 1.0 + 2f32.powi(-12), "{build:?}");
            // fed as a stream in two pieces: the same
            let mut st = StatsStream::with_build(build);
            st.advance(&x[..700]);
            assert_eq!(st.finish(&x).sum_sq, expect, "{build:?} streamed");
        }
    }

    #[test]
    fn scale_in_place_multiplies_every_value() {
        let mut x = [1.5f32, -2.0, 0.0, 3.0];
        scale_in_place(&mut x, 4.0);
        assert_eq!(x, [6.0, -8.0, 0.0, 12.0]);
    }

    /// `scale` multiplies by exactly the factor `applied_factor` names (what the statistics are
    /// scaled by): the f32-rounded factor for a normal one, `c` itself in f64 for one that f32
    /// would round to 0, to a subnormal or to infinity. Powers of two make every product exact.
    #[test]
    fn scale_applies_the_factor_applied_factor_names() {
        let p = |e: i32| 2f64.powi(e);
        // (c, x, x * applied factor, applied factor)
        let cases = [
            // normal: c rounds to 1 in f32 (below 1 + half an ulp), so x is unchanged; in f64,
            // 1.5 * c = 1.5 + 2^-24 + 2^-25 - ... would round up to 1.5 + 2^-23
            (1.0 + p(-24) - p(-40), 1.5f32, 1.5f32, 1.0),
            (0.25, -6.0, -1.5, 0.25),
            // f32 rounds 2^-160 to 0: applied in f64
            (p(-160), 2f32.powi(100), 2f32.powi(-60), p(-160)),
            // f32 rounds 2^-140 + 2^-160 to the subnormal 2^-140: applied in f64, exact
            (
                p(-140) + p(-160),
                2f32.powi(100),
                2f32.powi(-40) + 2f32.powi(-60),
                p(-140) + p(-160),
            ),
            // finite in f64, infinite in f32: applied in f64
            (p(130), 2f32.powi(-100), 2f32.powi(30), p(130)),
        ];
        for (c, x, expect, applied) in cases {
            assert_eq!(applied_factor(c), applied, "applied_factor({c:e})");
            let mut v = [x, -x];
            scale(&mut v, c);
            assert_eq!(v, [expect, -expect], "{x:e} * {c:e}");
            let mut v = [x];
            scale_body(&mut v, c);
            assert_eq!(v, [expect], "portable body: {x:e} * {c:e}");
        }
        // 0 is an f32 factor: IEEE rules, inf * 0 = NaN as in PyTorch
        assert_eq!(applied_factor(0.0), 0.0);
        let mut v = [1.5f32, f32::INFINITY];
        scale(&mut v, 0.0);
        assert_eq!(v[0], 0.0);
        assert!(v[1].is_nan());
    }
}
