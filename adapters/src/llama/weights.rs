//! The weight format the engine serves. A GGUF is often shipped in a format that llama.cpp's
//! CPU backend runs slowly: SmolLM2's Q4_1 has no repacked (interleaved) matrix kernels, so
//! prompts and batched decoding run on the generic dot product. Re-encoding it once at load
//! to Q8_0 (near-lossless from 4-bit weights, and repacked) made every measured number
//! better on the 2-core machine (`switchyard bench`, see the README's Benchmark).
//!
//! The re-encoded file is written to the temporary folder with llama.cpp's own quantizer,
//! loaded, and removed once loaded (llama.cpp has copied or mapped what it needs).

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{EngineError, Result};

/// What the served weights are encoded as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// The GGUF's own tensors, unchanged.
    AsShipped,
    /// 8-bit blocks: near-lossless from a 4-bit file, about 1.6x its size.
    Q8_0,
    /// 16-bit floats: lossless from a 4-bit file, about 3x its size.
    F16,
    /// 4-bit blocks without offsets: the fastest here, but a second, lossy quantization of a
    /// Q4_1 file.
    Q4_0,
}

impl WeightFormat {
    fn llama_ftype(self) -> Option<llama_cpp_sys_2::llama_ftype> {
        match self {
            WeightFormat::AsShipped => None,
            WeightFormat::Q8_0 => Some(llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q8_0),
            WeightFormat::F16 => Some(llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_F16),
            WeightFormat::Q4_0 => Some(llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q4_0),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WeightFormat::AsShipped => "gguf",
            WeightFormat::Q8_0 => "q8_0",
            WeightFormat::F16 => "f16",
            WeightFormat::Q4_0 => "q4_0",
        }
    }
}

/// A re-encoded GGUF in the temporary folder, removed when dropped.
pub struct Reencoded {
    pub path: PathBuf,
}

impl Drop for Reencoded {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes `gguf` re-encoded as `format` to a temporary file; `None` for `AsShipped`.
pub fn reencode(gguf: &Path, format: WeightFormat, threads: usize) -> Result<Option<Reencoded>> {
    let Some(ftype) = format.llama_ftype() else {
        return Ok(None);
    };
    // One name per load: a process may load several engines at once (the tests do).
    static LOADS: AtomicU64 = AtomicU64::new(0);
    let out = Reencoded {
        path: std::env::temp_dir().join(format!(
            "switchyard-{}-{}-{}.gguf",
            std::process::id(),
            LOADS.fetch_add(1, Ordering::Relaxed),
            format.as_str()
        )),
    };
    // Made here, exclusively, so that the quantizer writes a file of ours (not one a link in
    // the shared temporary folder points to).
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&out.path)
        .map_err(|e| EngineError::Load(format!("{}: {e}", out.path.display())))?;
    let c_path = |p: &Path| {
        CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|_| EngineError::Load(format!("{}: NUL in the path", p.display())))
    };
    let (input, output) = (c_path(gguf)?, c_path(&out.path)?);
    // SAFETY: plain-data parameters from llama.cpp's defaults; the paths outlive the call.
    let status = unsafe {
        let mut params = llama_cpp_sys_2::llama_model_quantize_default_params();
        params.ftype = ftype;
        params.allow_requantize = true;
        params.nthread = i32::try_from(threads).unwrap_or(0);
        llama_cpp_sys_2::llama_model_quantize(input.as_ptr(), output.as_ptr(), &params)
    };
    if status != 0 {
        return Err(EngineError::Load(format!(
            "re-encoding {} as {} failed (llama.cpp status {status})",
            gguf.display(),
            format.as_str()
        )));
    }
    Ok(Some(out))
}
