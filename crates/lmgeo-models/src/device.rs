//! Where a model runs, as a user writes it (`cpu`, `cuda`, `cuda:N`, `auto`),
//! resolved to a candle device only inside this crate so that callers need not
//! link candle.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use crate::ModelError;

/// The device a model is asked to run on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DeviceChoice {
    #[default]
    Cpu,
    /// A CUDA GPU by ordinal (`cuda` is `cuda:0`).
    Cuda(usize),
    /// The first CUDA GPU when this build has CUDA and one is present, else the CPU.
    Auto,
}

impl DeviceChoice {
    /// Whether this build was compiled with candle's CUDA backend
    /// (`--features cuda`).
    pub fn cuda_compiled() -> bool {
        candle_core::utils::cuda_is_available()
    }

    /// The candle device, or an error that says how to get one.
    pub fn resolve(self) -> Result<Device, ModelError> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(ordinal) => {
                if !Self::cuda_compiled() {
                    return Err(ModelError::Unsupported(format!(
                        "device `{self}` needs a build with CUDA: rebuild with \
                         `cargo build --release --features cuda` (needs the CUDA toolkit), \
                         or set device = \"cpu\" or \"auto\""
                    )));
                }
                Device::new_cuda(ordinal).map_err(|e| {
                    ModelError::Unsupported(format!(
                        "device `{self}`: cannot open the GPU ({e}); check the ordinal \
                         against `nvidia-smi -L` and CUDA_VISIBLE_DEVICES"
                    ))
                })
            }
            Self::Auto => {
                if Self::cuda_compiled()
                    && let Ok(device) = Device::new_cuda(0)
                {
                    return Ok(device);
                }
                Ok(Device::Cpu)
            }
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = ModelError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            ModelError::Request(format!(
                "device `{text}`: expected \"cpu\", \"cuda\", \"cuda:N\" (N a GPU number) or \"auto\""
            ))
        };
        match text.trim() {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            "auto" => Ok(Self::Auto),
            other => {
                let ordinal = other.strip_prefix("cuda:").ok_or_else(bad)?;
                ordinal.parse().map(Self::Cuda).map_err(|_| bad())
            }
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
            Self::Auto => f.write_str("auto"),
        }
    }
}

/// A human name for a resolved device, for logs and table metadata.
pub(crate) fn device_label(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip() {
        for (text, want) in [
            ("cpu", DeviceChoice::Cpu),
            ("cuda", DeviceChoice::Cuda(0)),
            ("cuda:3", DeviceChoice::Cuda(3)),
            ("auto", DeviceChoice::Auto),
        ] {
            let got: DeviceChoice = text.parse().unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string().parse::<DeviceChoice>().unwrap(), want);
        }
    }

    #[test]
    fn bad_spellings_name_the_choices() {
        for text in ["", "cuda:", "cuda:x", "tpu", "cuda:-1"] {
            let err = text.parse::<DeviceChoice>().unwrap_err().to_string();
            assert!(err.contains("\"cuda:N\""), "{text}: {err}");
        }
    }

    #[test]
    fn cpu_and_auto_always_resolve() {
        assert!(DeviceChoice::Cpu.resolve().unwrap().is_cpu());
        let auto = DeviceChoice::Auto.resolve().unwrap();
        if !DeviceChoice::cuda_compiled() {
            assert!(auto.is_cpu());
        }
    }

    #[test]
    fn cuda_without_the_feature_says_how_to_build_it() {
        if DeviceChoice::cuda_compiled() {
            return;
        }
        let err = DeviceChoice::Cuda(0).resolve().unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
