//! Every kernel entry point, declared from the kernel ABI's list ([`kernel_abi::kernel_list!`]):
//! names, dtypes and tiles are written there once, and the host loads the same list. Each entry
//! takes its family's parameter struct by value and runs the family's body; `sweep` entries
//! (measurement-only tiles) exist only with the `tile-sweep` feature.

use kernel_abi::{FallbackParams, QkvParams};

use crate::element::{Bf16, F16};
use crate::family;

/// The device type of a dtype named in the list.
macro_rules! element {
    (bf16) => {
        Bf16
    };
    (f16) => {
        F16
    };
    (f32) => {
        f32
    };
}

/// One `#[no_mangle]` entry point taking `$params` by value.
macro_rules! entry {
    ($name:ident($params:ident: $ty:ty) $body:block) => {
        #[doc = concat!("Entry point `", stringify!($name), "`: see `kernel_abi::KERNELS` for its tile.")]
        ///
        /// # Safety
        /// Launched as the kernel ABI says for its tile (grid, block, shared memory), with
        /// parameters that meet its family's launch contract.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name($params: $ty) $body
    };
}

macro_rules! declare_kernel {
    (sweep $family:ident $name:ident $dtype:ident $tile:tt) => {
        #[cfg(feature = "tile-sweep")]
        declare_kernel!(shipped $family $name $dtype $tile);
    };
    (shipped gemv $name:ident $dtype:ident { tokens: $tokens:literal, unroll: $unroll:literal }) => {
        entry!($name(params: QkvParams) { family::gemv::run::<element!($dtype), $tokens, $unroll>(&params) });
    };
    (shipped fallback $name:ident $dtype:ident { tokens: $tokens:literal, vector: $vector:literal }) => {
        entry!($name(params: FallbackParams) { family::fallback::run::<element!($dtype), $vector, $tokens>(&params) });
    };
    (shipped mma $name:ident $dtype:ident
        { weight_rows: $rows:literal, tokens: $tokens:literal, warps: $warps:literal, depth: $depth:literal }) => {
        entry!($name(params: QkvParams) {
            family::mma::run::<element!($dtype), { $rows / 16 }, { $tokens / 8 }, $warps, $depth>(&params)
        });
    };
    (shipped wgmma $name:ident $dtype:ident
        { tokens: $bm:literal, out_cols: $bn:literal, stages: $stages:literal, load: Tma }) => {
        #[cfg(target_feature = "sm_90a")]
        entry!($name(params: kernel_abi::TmaParams) {
            let loader = family::wgmma::Tma::in_params(crate::param_address!($name), params.qkv.shape.m);
            family::wgmma::run::<element!($dtype), _, $bm, $bn, { if $bm >= 128 { $bn } else { $bn / 2 } }, $stages>(
                &params.qkv,
                loader,
            )
        });
    };
    (shipped wgmma $name:ident $dtype:ident
        { tokens: 64, out_cols: $bn:literal, stages: $stages:literal, load: TmaProducer }) => {
        #[cfg(target_feature = "sm_90a")]
        entry!($name(params: kernel_abi::TmaParams) {
            let loader = family::wgmma::Tma::in_params(crate::param_address!($name), params.qkv.shape.m);
            family::wgmma::run_persistent::<element!($dtype), $bn, $stages>(&params.qkv, loader)
        });
    };
    (shipped wgmma $name:ident $dtype:ident
        { tokens: $bm:literal, out_cols: $bn:literal, stages: $stages:literal, load: CpAsync }) => {
        #[cfg(target_feature = "sm_90a")]
        entry!($name(params: QkvParams) {
            let loader = family::wgmma::CpAsync {
                x: params.x::<element!($dtype)>(),
                qkv_weight: params.qkv_weight::<element!($dtype)>(),
                shape: params.shape,
            };
            family::wgmma::run::<element!($dtype), _, $bm, $bn, { if $bm >= 128 { $bn } else { $bn / 2 } }, $stages>(
                &params,
                loader,
            )
        });
    };
}

macro_rules! declare_kernels {
    ($([$set:ident $family:ident $name:ident : $dtype:ident $tile:tt])*) => {
        $(declare_kernel!($set $family $name $dtype $tile);)*
    };
}

kernel_abi::kernel_list!(declare_kernels);
