//! Device telemetry on a sampler thread, written to `gpu.csv` as it comes and
//! summarised per point: NVML for every GPU the engine may use (respecting
//! `CUDA_VISIBLE_DEVICES`), or, on a CPU-only host, the kernel's RAPL energy counters
//! (`/sys/class/powercap`, read-only) where it exposes them. Without either, it says
//! so once and stays off.

use super::energy::{energy_in, joules_per_token, EnergySource, PowerSample};
use crate::core::clock;
use crate::core::measure::{Figure, Measure};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One reading of one device.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceSample {
    pub device: u32,
    pub at_ns: u64,
    pub util_pct: Option<f64>,
    pub mem_used_bytes: Option<u64>,
    /// Memory of this process and its children on the device.
    pub proc_mem_bytes: Option<u64>,
    pub power_w: Option<f64>,
    pub temp_c: Option<f64>,
    pub sm_mhz: Option<f64>,
    /// NVML's throttle-reason bit mask (0: not throttled).
    pub throttle: Option<u64>,
    /// Cumulative energy (J).
    pub energy_j: Option<f64>,
}

/// Where readings come from.
enum Source {
    Nvml {
        nvml: Arc<nvml_wrapper::Nvml>,
        indices: Vec<u32>,
    },
    /// RAPL zones: (energy_uj file, wrap range in J).
    Rapl(Vec<(PathBuf, f64)>),
}

/// The NVML device indices `CUDA_VISIBLE_DEVICES` allows (integers or UUIDs), or all.
pub fn visible_devices(nvml: &nvml_wrapper::Nvml) -> Vec<u32> {
    let count = nvml.device_count().unwrap_or(0);
    let all: Vec<u32> = (0..count).collect();
    let Ok(v) = std::env::var("CUDA_VISIBLE_DEVICES") else {
        return all;
    };
    v.split(',')
        .filter_map(|item| {
            let item = item.trim();
            if let Ok(i) = item.parse::<u32>() {
                return (i < count).then_some(i);
            }
            all.iter().copied().find(|&i| {
                nvml.device_by_index(i)
                    .and_then(|d| d.uuid())
                    .is_ok_and(|u| u.starts_with(item) || item.starts_with(&u))
            })
        })
        .collect()
}

/// Top-level RAPL zones (`intel-rapl:N`, not their sub-zones) with readable counters.
pub fn rapl_zones(root: &Path) -> Vec<(PathBuf, f64)> {
    let Ok(dir) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut zones: Vec<(PathBuf, f64)> = dir
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.contains("rapl:") && n.matches(':').count() == 1
        })
        .filter_map(|e| {
            let p = e.path();
            let wrap = std::fs::read_to_string(p.join("max_energy_range_uj"))
                .ok()?
                .trim()
                .parse::<f64>()
                .ok()?
                / 1e6;
            let energy = p.join("energy_uj");
            std::fs::read_to_string(&energy).ok()?;
            Some((energy, wrap))
        })
        .collect();
    zones.sort_by(|a, b| a.0.cmp(&b.0));
    zones
}

/// The descendants of this process (engine children), for per-process GPU memory.
fn own_pids() -> Vec<u32> {
    let mut pids = vec![std::process::id()];
    pids.extend(crate::process::children().into_iter().map(|p| p as u32));
    pids
}

impl Source {
    fn read(&self, at_ns: u64) -> Vec<DeviceSample> {
        match self {
            Source::Nvml { nvml, indices } => {
                let mine = own_pids();
                indices
                    .iter()
                    .filter_map(|&i| {
                        let d = nvml.device_by_index(i).ok()?;
                        use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
                        let proc_mem = d.running_compute_processes().ok().map(|ps| {
                            ps.iter()
                                .filter(|p| mine.contains(&p.pid))
                                .map(|p| match p.used_gpu_memory {
                                    nvml_wrapper::enums::device::UsedGpuMemory::Used(b) => b,
                                    _ => 0,
                                })
                                .sum()
                        });
                        Some(DeviceSample {
                            device: i,
                            at_ns,
                            util_pct: d.utilization_rates().ok().map(|u| f64::from(u.gpu)),
                            mem_used_bytes: d.memory_info().ok().map(|m| m.used),
                            proc_mem_bytes: proc_mem,
                            power_w: d.power_usage().ok().map(|mw| f64::from(mw) / 1e3),
                            temp_c: d.temperature(TemperatureSensor::Gpu).ok().map(f64::from),
                            sm_mhz: d.clock_info(Clock::SM).ok().map(f64::from),
                            throttle: d.current_throttle_reasons().ok().map(|t| t.bits()),
                            energy_j: d.total_energy_consumption().ok().map(|mj| mj as f64 / 1e3),
                        })
                    })
                    .collect()
            }
            Source::Rapl(zones) => zones
                .iter()
                .enumerate()
                .filter_map(|(i, (p, _))| {
                    let uj: f64 = std::fs::read_to_string(p).ok()?.trim().parse().ok()?;
                    Some(DeviceSample {
                        device: i as u32,
                        at_ns,
                        energy_j: Some(uj / 1e6),
                        ..Default::default()
                    })
                })
                .collect(),
        }
    }

    fn wrap_j(&self, device: u32) -> Option<f64> {
        match self {
            Source::Rapl(z) => z.get(device as usize).map(|(_, w)| *w),
            Source::Nvml { .. } => None,
        }
    }
}

/// The sampler thread and what it has read.
pub struct Sampler {
    source: Arc<Source>,
    samples: Arc<Mutex<Vec<DeviceSample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// `NVIDIA A100 (device 0)`, or `RAPL package-0`.
    pub devices: Vec<String>,
    pub kind: &'static str,
}

/// The CSV header of `gpu.csv`.
const CSV_HEADER: &str = "t_s,device,util_pct,mem_used_mib,proc_mem_mib,power_w,temp_c,sm_mhz,throttle_reasons,energy_j\n";

fn cell(v: Option<f64>) -> String {
    v.map_or_else(String::new, |v| format!("{v:.3}"))
}

impl Sampler {
    /// Starts sampling every `period` into `csv`; `Err` says why telemetry is off.
    pub fn start(csv: &Path, period: Duration) -> Result<Sampler, String> {
        let (source, devices, kind) = match nvml_wrapper::Nvml::init() {
            Ok(nvml) => {
                let nvml = Arc::new(nvml);
                let indices = visible_devices(&nvml);
                if indices.is_empty() {
                    return Err("NVML sees no GPU (or CUDA_VISIBLE_DEVICES hides them all)".into());
                }
                let names = indices
                    .iter()
                    .map(|&i| {
                        let n = nvml
                            .device_by_index(i)
                            .and_then(|d| d.name())
                            .unwrap_or_default();
                        format!("{n} (device {i})")
                    })
                    .collect();
                (Source::Nvml { nvml, indices }, names, "NVML")
            }
            Err(nvml_err) => {
                let zones = rapl_zones(Path::new("/sys/class/powercap"));
                if zones.is_empty() {
                    return Err(format!(
                        "no NVML ({nvml_err}) and no RAPL energy counters exposed (/sys/class/powercap)"
                    ));
                }
                let names = zones
                    .iter()
                    .map(|(p, _)| {
                        let dir = p.parent().unwrap_or(p);
                        std::fs::read_to_string(dir.join("name")).map_or_else(
                            |_| dir.display().to_string(),
                            |n| format!("RAPL {}", n.trim()),
                        )
                    })
                    .collect();
                (Source::Rapl(zones), names, "RAPL")
            }
        };
        let mut file = std::fs::File::create(csv).map_err(|e| format!("{}: {e}", csv.display()))?;
        let _ = file.write_all(CSV_HEADER.as_bytes());
        let source = Arc::new(source);
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (src, out, halt) = (source.clone(), samples.clone(), stop.clone());
        let t0 = clock::now();
        let thread = std::thread::Builder::new()
            .name("telemetry".into())
            .spawn(move || {
                while !halt.load(Ordering::Relaxed) {
                    let now = clock::now();
                    let batch = src.read(now.0);
                    for s in &batch {
                        let line = format!(
                            "{:.3},{},{},{},{},{},{},{},{},{}\n",
                            now.since(t0) as f64 / 1e9,
                            s.device,
                            cell(s.util_pct),
                            cell(s.mem_used_bytes.map(|b| b as f64 / 1048576.0)),
                            cell(s.proc_mem_bytes.map(|b| b as f64 / 1048576.0)),
                            cell(s.power_w),
                            cell(s.temp_c),
                            cell(s.sm_mhz),
                            s.throttle.map_or_else(String::new, |t| t.to_string()),
                            cell(s.energy_j)
                        );
                        let _ = file.write_all(line.as_bytes());
                    }
                    if let Ok(mut v) = out.lock() {
                        v.extend(batch);
                    }
                    std::thread::sleep(period);
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Sampler {
            source,
            samples,
            stop,
            thread: Some(thread),
            devices,
            kind,
        })
    }

    /// The telemetry of `[from_ns, to_ns]` that produced `tokens` output tokens;
    /// `phases` are the prefill-heavy windows inside it (the rest is decode-heavy).
    pub fn point(&self, from_ns: u64, to_ns: u64, tokens: u64, phases: &[(u64, u64)]) -> Telemetry {
        let all = self.samples.lock().map(|v| v.clone()).unwrap_or_default();
        summarize(
            &all,
            |d| self.source.wrap_j(d),
            from_ns,
            to_ns,
            tokens,
            phases,
            self.kind,
            &self.devices,
        )
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A point's telemetry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    /// `NVML` or `RAPL`.
    pub source: String,
    pub devices: Vec<String>,
    pub samples: usize,
    pub util_mean_pct: Option<f64>,
    pub util_max_pct: Option<f64>,
    pub power_mean_w: Option<f64>,
    pub power_max_w: Option<f64>,
    pub mem_peak_bytes: Option<u64>,
    pub proc_mem_peak_bytes: Option<u64>,
    pub temp_max_c: Option<f64>,
    pub sm_mhz_mean: Option<f64>,
    /// Share of samples with any throttle reason set (percent).
    pub throttled_pct: Option<f64>,
    /// Energy over the point, summed over devices (J).
    pub energy_j: Option<f64>,
    pub energy_method: Option<String>,
    pub joules_per_token: Option<f64>,
    pub prefill_energy_j: Option<f64>,
    pub decode_energy_j: Option<f64>,
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn max(v: &[f64]) -> Option<f64> {
    v.iter().copied().reduce(f64::max)
}

/// Energy (J) summed over devices in `[from, to]`, and how it was obtained.
fn energy(
    samples: &[DeviceSample],
    wrap: &impl Fn(u32) -> Option<f64>,
    from: u64,
    to: u64,
) -> Option<(f64, EnergySource)> {
    let mut devices: Vec<u32> = samples.iter().map(|s| s.device).collect();
    devices.sort_unstable();
    devices.dedup();
    let mut total = None;
    for d in devices {
        let series: Vec<PowerSample> = samples
            .iter()
            .filter(|s| s.device == d)
            .map(|s| PowerSample {
                at_ns: s.at_ns,
                power_w: s.power_w,
                energy_j: s.energy_j,
            })
            .collect();
        if let Some((j, src)) = energy_in(&series, from, to, wrap(d)) {
            let (t, _) = total.get_or_insert((0.0, src));
            *t += j;
        }
    }
    total
}

/// A point's telemetry from all samples (pure: tested on hand-made samples).
#[allow(clippy::too_many_arguments)]
pub fn summarize(
    all: &[DeviceSample],
    wrap: impl Fn(u32) -> Option<f64>,
    from_ns: u64,
    to_ns: u64,
    tokens: u64,
    phases: &[(u64, u64)],
    kind: &str,
    devices: &[String],
) -> Telemetry {
    let inside: Vec<&DeviceSample> = all
        .iter()
        .filter(|s| (from_ns..=to_ns).contains(&s.at_ns))
        .collect();
    let f = |g: fn(&DeviceSample) -> Option<f64>| -> Vec<f64> {
        inside.iter().filter_map(|s| g(s)).collect()
    };
    let util = f(|s| s.util_pct);
    let power = f(|s| s.power_w);
    let e = energy(all, &wrap, from_ns, to_ns);
    let phase_j: Option<f64> = (!phases.is_empty())
        .then(|| {
            phases
                .iter()
                .map(|&(a, b)| energy(all, &wrap, a, b).map(|e| e.0))
                .sum::<Option<f64>>()
        })
        .flatten();
    let throttles: Vec<u64> = inside.iter().filter_map(|s| s.throttle).collect();
    Telemetry {
        source: kind.into(),
        devices: devices.to_vec(),
        samples: inside.len(),
        util_mean_pct: mean(&util),
        util_max_pct: max(&util),
        power_mean_w: mean(&power),
        power_max_w: max(&power),
        mem_peak_bytes: inside.iter().filter_map(|s| s.mem_used_bytes).max(),
        proc_mem_peak_bytes: inside.iter().filter_map(|s| s.proc_mem_bytes).max(),
        temp_max_c: max(&f(|s| s.temp_c)),
        sm_mhz_mean: mean(&f(|s| s.sm_mhz)),
        throttled_pct: (!throttles.is_empty()).then(|| {
            throttles.iter().filter(|&&t| t != 0).count() as f64 * 100.0 / throttles.len() as f64
        }),
        energy_j: e.map(|e| e.0),
        energy_method: e.map(|e| e.1.describe().to_string()),
        joules_per_token: e.and_then(|e| joules_per_token(e.0, tokens)),
        prefill_energy_j: phase_j,
        decode_energy_j: e.zip(phase_j).map(|(e, p)| (e.0 - p).max(0.0)),
    }
}

impl Measure for Telemetry {
    const NAME: &'static str = "telemetry";
    const DEFINITION: &'static str = "device telemetry sampled on a thread (--gpu-sample-ms) over the \
        point's window (first submit to last finish): NVML utilisation, memory (device and this \
        process tree), power, temperature, SM clock and throttle reasons for every GPU the engine may \
        use; on a CPU-only host RAPL energy counters where the kernel exposes them. energy_j = the \
        devices' energy counter delta (or sampled power integrated over time, as energy_method says); \
        joules_per_token = energy_j / output tokens; prefill/decode energy split at each batch's \
        last first token (batch mode). Samples are in gpu.csv";

    fn figures(&self) -> Vec<Figure> {
        let gib = |b: Option<u64>| b.map(|b| b as f64 / (1u64 << 30) as f64);
        vec![
            Figure::new("gpu_utilization_pct", self.util_mean_pct, "%").column("GPU util %", 0),
            Figure::new("max_gpu_utilization_pct", self.util_max_pct, "%"),
            Figure::new("gpu_power_w", self.power_mean_w, "W").column("power W", 0),
            Figure::new("max_gpu_power_w", self.power_max_w, "W"),
            Figure::new("peak_gpu_memory_gib", gib(self.mem_peak_bytes), "GiB"),
            Figure::new(
                "peak_process_gpu_memory_gib",
                gib(self.proc_mem_peak_bytes),
                "GiB",
            ),
            Figure::new("max_gpu_temperature_c", self.temp_max_c, "C"),
            Figure::new("gpu_sm_clock_mhz", self.sm_mhz_mean, "MHz"),
            Figure::new("gpu_throttled_pct", self.throttled_pct, "%"),
            Figure::new("energy_j", self.energy_j, "J"),
            Figure::new("joules_per_token", self.joules_per_token, "J").column("J/token", 3),
            Figure::new("prefill_energy_j", self.prefill_energy_j, "J"),
            Figure::new("decode_energy_j", self.decode_energy_j, "J"),
        ]
    }

    fn warning(&self) -> Option<String> {
        self.throttled_pct
            .filter(|&t| t > 0.0)
            .map(|t| format!("the GPU was throttled in {t:.0} % of the samples (see gpu.csv)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(device: u32, t_ms: u64, power: f64, energy: f64) -> DeviceSample {
        DeviceSample {
            device,
            at_ns: t_ms * 1_000_000,
            util_pct: Some(50.0 + device as f64 * 10.0),
            power_w: Some(power),
            energy_j: Some(energy),
            mem_used_bytes: Some(1 << 30),
            throttle: Some(if t_ms == 200 { 4 } else { 0 }),
            ..Default::default()
        }
    }

    #[test]
    fn a_point_from_two_devices() {
        // Two GPUs, 100 ms apart; device 1 draws twice device 0's energy.
        let mut all = Vec::new();
        for t in 0..=5u64 {
            all.push(sample(0, t * 100, 100.0, 10.0 * t as f64));
            all.push(sample(1, t * 100, 200.0, 20.0 * t as f64));
        }
        let ms = 1_000_000;
        let tel = summarize(
            &all,
            |_| None,
            100 * ms,
            400 * ms,
            30,
            &[(100 * ms, 200 * ms)],
            "NVML",
            &[],
        );
        // Counters from 100 to 400 ms: 30 J + 60 J.
        assert_eq!(tel.energy_j, Some(90.0));
        assert_eq!(tel.energy_method.as_deref(), Some("energy counter delta"));
        assert_eq!(tel.joules_per_token, Some(3.0));
        // Prefill 100–200 ms: 10 + 20 J; the rest decode.
        assert_eq!(tel.prefill_energy_j, Some(30.0));
        assert_eq!(tel.decode_energy_j, Some(60.0));
        assert_eq!(tel.samples, 8);
        assert_eq!(tel.util_mean_pct, Some(55.0));
        assert_eq!(tel.power_max_w, Some(200.0));
        assert_eq!(tel.throttled_pct, Some(25.0));
        assert!(tel.warning().unwrap().contains("throttled in 25 %"));
        let figs = tel.figures();
        assert!(figs
            .iter()
            .any(|f| f.key == "joules_per_token" && f.value == Some(3.0)));
    }

    #[test]
    fn rapl_zones_are_top_level_and_readable() {
        let d = tempfile::tempdir().unwrap();
        for (zone, readable) in [
            ("intel-rapl:0", true),
            ("intel-rapl:0:0", true),
            ("intel-rapl:1", false),
        ] {
            let z = d.path().join(zone);
            std::fs::create_dir(&z).unwrap();
            std::fs::write(z.join("max_energy_range_uj"), "262143328850\n").unwrap();
            if readable {
                std::fs::write(z.join("energy_uj"), "1000000\n").unwrap();
            }
        }
        let zones = rapl_zones(d.path());
        assert_eq!(zones.len(), 1);
        assert!(zones[0].0.ends_with("intel-rapl:0/energy_uj"));
        assert!((zones[0].1 - 262_143.328_85).abs() < 1e-6);
        assert!(rapl_zones(&d.path().join("none")).is_empty());
        // This machine: whatever it has, the call does not fail.
        let _ = rapl_zones(Path::new("/sys/class/powercap"));
    }
}
