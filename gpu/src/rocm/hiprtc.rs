//! HIP source to a code object through hiprtc, which hip-runtime-sys does
//! not bind: a hand-written binding of the seven calls used, and
//! [`compile`], which needs no GPU (hiprtc compiles for a named
//! architecture), so the standard kernels' HIP text is compiled in tests on
//! any machine with the library.
//!
//! In HIP 5.x hiprtc's symbols live in libamdhip64 (linked by
//! hip-runtime-sys); ROCm 6 moved them to libhiprtc, which the `#[link]`
//! below would then have to name.

use std::ffi::{CStr, CString, c_char, c_int, c_void};

/// `hiprtcProgram`: an opaque pointer.
type Program = *mut c_void;
/// `HIPRTC_SUCCESS`.
const SUCCESS: c_int = 0;
/// `HIPRTC_ERROR_COMPILATION`.
const ERROR_COMPILATION: c_int = 6;

// SAFETY (of the declarations): each signature is copied from
// /usr/include/hip/hiprtc.h (HIP 5.2): `hiprtcResult` is a C enum, passed
// as `int`; `size_t` is `usize`; strings are NUL-terminated `const char*`.
// Results are read as plain integers, so an unknown code is still a valid
// value.
#[link(name = "amdhip64")]
unsafe extern "C" {
    #[link_name = "hiprtcCreateProgram"]
    fn create_program(
        prog: *mut Program,
        src: *const c_char,
        name: *const c_char,
        num_headers: c_int,
        headers: *const *const c_char,
        include_names: *const *const c_char,
    ) -> c_int;
    #[link_name = "hiprtcCompileProgram"]
    fn compile_program(prog: Program, num_options: c_int, options: *const *const c_char) -> c_int;
    #[link_name = "hiprtcGetProgramLogSize"]
    fn get_program_log_size(prog: Program, size: *mut usize) -> c_int;
    #[link_name = "hiprtcGetProgramLog"]
    fn get_program_log(prog: Program, log: *mut c_char) -> c_int;
    #[link_name = "hiprtcGetCodeSize"]
    fn get_code_size(prog: Program, size: *mut usize) -> c_int;
    #[link_name = "hiprtcGetCode"]
    fn get_code(prog: Program, code: *mut c_char) -> c_int;
    #[link_name = "hiprtcDestroyProgram"]
    fn destroy_program(prog: *mut Program) -> c_int;
}

/// Compiles HIP `source` (named `name` in logs) for architecture `arch`
/// (`gfx90a:sramecc+:xnack-`) into a code object for `hipModuleLoadData`;
/// the error is hiprtc's log, or what failed.
pub(super) fn compile(name: &str, source: &str, arch: &str) -> Result<Vec<u8>, String> {
    let c_source = CString::new(source).map_err(|_| "the source contains a NUL byte")?;
    let c_name = CString::new(format!("{name}.hip")).map_err(|_| "the name contains a NUL byte")?;
    let option = CString::new(format!("--gpu-architecture={arch}"))
        .map_err(|_| "the architecture name contains a NUL byte")?;
    let options = [option.as_ptr()];
    let mut program: Program = std::ptr::null_mut();
    // SAFETY: valid out-pointer and NUL-terminated strings; no headers.
    let created = unsafe {
        create_program(
            &mut program,
            c_source.as_ptr(),
            c_name.as_ptr(),
            0,
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if created != SUCCESS {
        return Err(format!("hiprtcCreateProgram failed with code {created}"));
    }
    // SAFETY: `program` was created above and is destroyed only at the end
    // of this function; the options outlive the call.
    let compiled = unsafe { compile_program(program, options.len() as c_int, options.as_ptr()) };
    let log = program_log(program);
    let code = match compiled {
        SUCCESS => program_code(program).ok_or_else(|| "hiprtcGetCode failed".to_string()),
        ERROR_COMPILATION => Err(log),
        other => Err(format!("hiprtcCompileProgram failed with code {other}: {log}")),
    };
    // SAFETY: `program` is live and not used after this.
    unsafe { destroy_program(&mut program) };
    code
}

fn program_log(program: Program) -> String {
    let mut size = 0usize;
    // SAFETY: `program` is live (the caller's); valid out-pointer.
    if unsafe { get_program_log_size(program, &mut size) } != SUCCESS || size == 0 {
        return String::new();
    }
    let mut log = vec![0 as c_char; size];
    // SAFETY: `log` has the `size` bytes hiprtc asked for.
    if unsafe { get_program_log(program, log.as_mut_ptr()) } != SUCCESS {
        return String::new();
    }
    log.push(0);
    // SAFETY: `log` ends with the NUL pushed just above.
    unsafe { CStr::from_ptr(log.as_ptr()) }.to_string_lossy().trim().to_string()
}

fn program_code(program: Program) -> Option<Vec<u8>> {
    let mut size = 0usize;
    // SAFETY: `program` is live (the caller's); valid out-pointer.
    if unsafe { get_code_size(program, &mut size) } != SUCCESS || size == 0 {
        return None;
    }
    let mut code = vec![0u8; size];
    // SAFETY: `code` has the `size` bytes hiprtc asked for.
    (unsafe { get_code(program, code.as_mut_ptr().cast()) } == SUCCESS).then_some(code)
}
