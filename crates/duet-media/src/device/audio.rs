//! Shared cpal plumbing for the microphone and the speaker.

use std::panic::{AssertUnwindSafe, catch_unwind};

use cpal::traits::{DeviceTrait, HostTrait};
use cpal::{Device, Host, SupportedStreamConfig};

use super::DeviceInfo;
use crate::AUDIO_SAMPLE_RATE;

/// Which side of the sound card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    Input,
    Output,
}

impl Direction {
    fn noun(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Output => "output",
        }
    }
}

pub(super) fn device_name(device: &Device) -> String {
    device.description().map_or_else(|_| "unnamed audio device".to_owned(), |d| d.name().to_owned())
}

fn device_id(device: &Device) -> String {
    device.id().map_or_else(|_| device_name(device), |id| id.to_string())
}

/// ALSA's `null` plugin (discards playback, captures silence) is not a device a person would pick, and on
/// machines without a sound card it is the only one listed: leave it out.
fn is_pseudo_device(device: &Device) -> bool {
    #[cfg(any(target_os = "linux", target_os = "dragonfly", target_os = "freebsd", target_os = "netbsd"))]
    {
        device.id().is_ok_and(|id| id.host() == cpal::HostId::Alsa && id.id() == "null")
    }
    #[cfg(not(any(target_os = "linux", target_os = "dragonfly", target_os = "freebsd", target_os = "netbsd")))]
    {
        let _ = device;
        false
    }
}

/// The device with this id or name, or the default one; `Err` with a reason when there is none.
pub(super) fn find_device(host: &Host, direction: Direction, wanted: Option<&str>) -> Result<Device, String> {
    let Some(wanted) = wanted else {
        let default = match direction {
            Direction::Input => host.default_input_device(),
            Direction::Output => host.default_output_device(),
        };
        return default.ok_or_else(|| format!("no default {} device", direction.noun()));
    };
    let devices = match direction {
        Direction::Input => host.input_devices().map(|d| d.collect::<Vec<_>>()),
        Direction::Output => host.output_devices().map(|d| d.collect::<Vec<_>>()),
    }
    .map_err(|e| format!("cannot list {} devices: {e}", direction.noun()))?;
    devices
        .into_iter()
        .find(|d| device_id(d) == wanted || device_name(d) == wanted)
        .ok_or_else(|| format!("no {} device named {wanted:?}", direction.noun()))
}

/// The device's default configuration, moved to 48 kHz when the device supports that with the same sample
/// format and channels (no resampling then). `Err` when the device has no usable configuration at all.
pub(super) fn stream_config(device: &Device, direction: Direction) -> Result<SupportedStreamConfig, String> {
    let default = match direction {
        Direction::Input => device.default_input_config(),
        Direction::Output => device.default_output_config(),
    }
    .map_err(|e| e.to_string())?;
    let same_shape = |r: &cpal::SupportedStreamConfigRange| {
        r.channels() == default.channels() && r.sample_format() == default.sample_format()
    };
    let at_48k = match direction {
        Direction::Input => device
            .supported_input_configs()
            .ok()
            .and_then(|mut ranges| ranges.find(same_shape).and_then(|r| r.try_with_sample_rate(AUDIO_SAMPLE_RATE))),
        Direction::Output => device
            .supported_output_configs()
            .ok()
            .and_then(|mut ranges| ranges.find(same_shape).and_then(|r| r.try_with_sample_rate(AUDIO_SAMPLE_RATE))),
    };
    Ok(at_48k.unwrap_or(default))
}

/// Lists the usable devices of one direction; unusable ones (no configuration) are left out with a note,
/// and so is ALSA's `null` pseudo-device.
pub(super) fn list(direction: Direction, notes: &mut Vec<String>) -> Vec<DeviceInfo> {
    let listed = catch_unwind(AssertUnwindSafe(|| {
        let host = cpal::default_host();
        let default = match direction {
            Direction::Input => host.default_input_device(),
            Direction::Output => host.default_output_device(),
        };
        let default_id = default.map(|device| match stream_config(&device, direction) {
            Ok(_) => Ok(device_id(&device)),
            Err(reason) => Err(format!(
                "default audio {} {:?} is present but unusable: {reason}",
                direction.noun(),
                device_name(&device)
            )),
        });
        let devices = match direction {
            Direction::Input => host.input_devices().map(|d| d.collect::<Vec<_>>()),
            Direction::Output => host.output_devices().map(|d| d.collect::<Vec<_>>()),
        };
        (default_id, devices)
    }));
    let (default_id, devices) = match listed {
        Ok((default_id, Ok(devices))) => {
            let default_id = match default_id {
                Some(Ok(id)) => Some(id),
                Some(Err(note)) => {
                    notes.push(note);
                    None
                }
                None => None,
            };
            (default_id, devices)
        }
        Ok((_, Err(error))) => {
            notes.push(format!("cannot list audio {} devices: {error}", direction.noun()));
            return Vec::new();
        }
        Err(_) => {
            notes.push(format!("audio {} enumeration panicked", direction.noun()));
            return Vec::new();
        }
    };
    devices
        .iter()
        .filter(|device| !is_pseudo_device(device))
        .filter_map(|device| {
            let name = device_name(device);
            match stream_config(device, direction) {
                Ok(_) => {
                    let id = device_id(device);
                    Some(DeviceInfo { is_default: default_id.as_deref() == Some(id.as_str()), id, name })
                }
                Err(reason) => {
                    notes.push(format!("audio {} {name:?} is present but unusable: {reason}", direction.noun()));
                    None
                }
            }
        })
        .collect()
}
