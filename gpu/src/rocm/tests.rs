//! The ROCm backend's tests that need no AMD GPU: error classes, and the
//! HIP standard source derived from the CUDA one (gpu/tests/rocm.rs has the
//! rest, ignored without a GPU).

use std::collections::BTreeSet;

use hip_runtime_sys::hipError_t;

use super::*;
use crate::error::ErrorClass;
use crate::info::DeviceId;
use crate::kernel::Kernel;
use crate::native::testing::assert_classes;

const PRELUDE: &str = include_str!("../../kernels/hip/prelude.h");
const CUDA_SOURCE: &str = include_str!("../../kernels/cuda/standard.cu");

#[test]
fn hip_codes_map_to_the_class_a_caller_acts_on() {
    let device = DeviceId::new(BackendKind::Rocm, 0);
    use hipError_t as E;
    let cases: [(ErrorClass, &[hipError_t]); 4] = [
        (ErrorClass::OutOfMemory, &[E::hipErrorOutOfMemory]),
        (ErrorClass::Transient, &[E::hipErrorLaunchTimeOut, E::hipErrorLaunchOutOfResources]),
        (ErrorClass::Request, &[E::hipErrorInvalidValue]),
        (
            ErrorClass::Device,
            &[E::hipErrorECCNotCorrectable, E::hipErrorIllegalAddress, E::hipErrorUnknown],
        ),
    ];
    assert_classes(device, |code| hip_error(device, code, "op"), &cases);
    let lost = hip_error(device, hipError_t::hipErrorIllegalAddress, "sync");
    assert_eq!(
        lost,
        GpuError::DeviceLost { device, detail: "sync: hipErrorIllegalAddress".into() }
    );
}

/// `source` with comments and string literals blanked out.
fn code(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
                out.push(' ');
            }
            ('"', _) => {
                for c in chars.by_ref() {
                    if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// Every identifier of `code`, with the token before it and the first
/// character after it (numbers, `0.5f` included, are skipped whole).
fn identifiers(code: &str) -> Vec<(String, String, char)> {
    let chars: Vec<char> = code.chars().collect();
    let mut found = Vec::new();
    let mut previous = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            previous.clear();
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let name: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().copied().find(|c| !c.is_whitespace()).unwrap_or(' ');
            found.push((name.clone(), previous.clone(), next));
            previous = name;
        } else {
            if !c.is_whitespace() {
                previous = c.to_string();
            }
            i += 1;
        }
    }
    found
}

/// The names `#define`d in `code`, with their macro parameters.
fn defined(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in code.lines() {
        let Some(rest) = line.trim_start().strip_prefix("#define ") else { continue };
        let name_end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
        let (name, after) = rest.split_at(name_end.unwrap_or(rest.len()));
        names.insert(name.to_string());
        // A function-like macro's parameters follow its name at once.
        if let Some(parameters) = after.strip_prefix('(') {
            let parameters = parameters.split(')').next().unwrap_or_default();
            names.extend(parameters.split(',').map(|p| p.trim().to_string()));
        }
    }
    names
}

/// The names in CUDA's vocabulary that `code` uses: `__`-prefixed names,
/// built-in variables (`threadIdx.x`), and functions it calls but does not
/// define.
fn vendor_names(code: &str) -> BTreeSet<String> {
    const KEYWORDS: [&str; 7] = ["if", "for", "while", "switch", "return", "sizeof", "do"];
    let defined = defined(code);
    identifiers(code)
        .into_iter()
        .filter(|(name, previous, next)| {
            let called = *next == '('
                && !KEYWORDS.contains(&name.as_str())
                && !defined.contains(name)
                && previous != "void";
            name.starts_with("__") || *next == '.' || called
        })
        .map(|(name, _, _)| name)
        .collect()
}

#[test]
fn the_hip_source_is_the_prelude_then_the_cuda_source_itself() {
    assert_eq!(STANDARD_SOURCE, format!("{PRELUDE}{CUDA_SOURCE}"));
    assert!(PRELUDE.trim_end().ends_with("#line 1 \"standard.cu\""), "logs point into standard.cu");
    let copy = concat!(env!("CARGO_MANIFEST_DIR"), "/kernels/hip/standard.hip");
    assert!(!std::path::Path::new(copy).exists(), "{copy} would drift from standard.cu");
}

#[test]
fn every_kernel_the_backend_looks_up_is_defined_in_the_hip_source() {
    for kernel in Kernel::ALL {
        let definition = format!("extern \"C\" __global__ void {}(", kernel.name());
        assert_eq!(STANDARD_SOURCE.matches(&definition).count(), 1, "{}", kernel.name());
    }
}

#[test]
fn every_cuda_name_the_kernels_use_is_spelled_the_same_in_hip_or_mapped() {
    let same: BTreeSet<String> = PRELUDE
        .lines()
        .filter_map(|line| line.strip_prefix("// HIP-SAME:"))
        .flat_map(str::split_whitespace)
        .map(str::to_string)
        .collect();
    let mapped = defined(&code(PRELUDE));
    let used = vendor_names(&code(CUDA_SOURCE));
    let unmapped: Vec<&String> =
        used.iter().filter(|name| !same.contains(*name) && !mapped.contains(*name)).collect();
    assert!(unmapped.is_empty(), "CUDA names the HIP prelude neither lists nor maps: {unmapped:?}");
    let stale: Vec<&String> = same.difference(&used).collect();
    assert!(stale.is_empty(), "HIP-SAME names standard.cu does not use: {stale:?}");
    for (name, _, _) in identifiers(&code(CUDA_SOURCE)) {
        let cuda_only = name == "asm"
            || name == "warpSize"
            || name.starts_with("cuda")
            || name.starts_with("CU")
            || name.starts_with("__nv");
        assert!(!cuda_only, "standard.cu uses `{name}`, which HIP lacks or sizes differently");
    }
}

#[test]
fn the_name_scan_sees_calls_builtins_and_vendor_names_but_not_local_ones() {
    let source = r#"
        // __comment_only__ and cudaMalloc( in a comment do not count
        #define TWICE(x) ((x) + (x))
        extern "C" __global__ void mine(float* out) {
            float v = TWICE(__fdividef(1.0f, 2.5f));
            if (threadIdx.x == 0) { out[0] = rsqrtf(v); }
        }"#;
    let names: Vec<String> = vendor_names(&code(source)).into_iter().collect();
    assert_eq!(names, ["__fdividef", "__global__", "rsqrtf", "threadIdx"]);
}

/// hiprtc compiles for a named architecture without a GPU, so the derived
/// source is compiled for real wherever libamdhip64 is (every `rocm` build).
#[test]
fn hiprtc_compiles_the_derived_source_for_an_amd_architecture() {
    match hiprtc::compile("zbmd_standard", STANDARD_SOURCE, "gfx90a") {
        Ok(code) => assert!(!code.is_empty()),
        Err(log) => panic!("hiprtc rejected the standard kernels:\n{log}"),
    }
    let broken = "extern \"C\" __global__ void broken(float* x) { x[0] = ; }";
    let log = hiprtc::compile("broken", broken, "gfx90a").unwrap_err();
    assert!(log.contains("error"), "the log should carry hiprtc's diagnostics: {log}");
}
