//! Capture and playback devices: cameras (feature `camera`), microphones and speakers (feature
//! `audio-device`), and their enumeration.

use std::fmt;

#[cfg(feature = "audio-device")]
mod audio;
#[cfg(feature = "camera")]
pub mod camera;
#[cfg(feature = "audio-device")]
pub mod microphone;
pub mod playout;
#[cfg(feature = "audio-device")]
pub mod speaker;

/// One device as listed by [`list_devices`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// What to pass to open it: the camera index, or the audio device id.
    pub id: String,
    /// A human-readable name.
    pub name: String,
    /// True for the system's default device of its kind.
    pub is_default: bool,
}

/// The devices present and usable. Devices that are present but unusable (e.g. ALSA's null device with no
/// sound card) are left out, with a note saying why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Devices {
    /// Cameras.
    pub cameras: Vec<DeviceInfo>,
    /// Audio inputs.
    pub microphones: Vec<DeviceInfo>,
    /// Audio outputs.
    pub speakers: Vec<DeviceInfo>,
    /// Problems met while listing, for logs and a settings page.
    pub notes: Vec<String>,
}

impl fmt::Display for Devices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (kind, list) in
            [("cameras", &self.cameras), ("microphones", &self.microphones), ("speakers", &self.speakers)]
        {
            if list.is_empty() {
                writeln!(f, "{kind}: none")?;
            } else {
                writeln!(f, "{kind}:")?;
                for device in list {
                    let default = if device.is_default { " (default)" } else { "" };
                    writeln!(f, "  [{}] {}{default}", device.id, device.name)?;
                }
            }
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        Ok(())
    }
}

/// Lists cameras, microphones and speakers. Never panics (a backend that panics is caught and noted) and
/// never fails: an empty list means "none usable", with [`Devices::notes`] saying why where known.
#[must_use]
pub fn list_devices() -> Devices {
    let mut devices = Devices::default();
    #[cfg(feature = "camera")]
    match camera::list() {
        Ok(cameras) => devices.cameras = cameras,
        Err(reason) => devices.notes.push(reason),
    }
    #[cfg(not(feature = "camera"))]
    devices.notes.push("built without camera support (feature `camera`)".to_owned());
    #[cfg(feature = "audio-device")]
    {
        devices.microphones = audio::list(audio::Direction::Input, &mut devices.notes);
        devices.speakers = audio::list(audio::Direction::Output, &mut devices.notes);
    }
    #[cfg(not(feature = "audio-device"))]
    devices.notes.push("built without audio device support (feature `audio-device`)".to_owned());
    devices
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_says_none_clearly() {
        let devices = Devices {
            cameras: vec![DeviceInfo { id: "0".into(), name: "Webcam".into(), is_default: true }],
            notes: vec!["audio input \"null\" is present but unusable".into()],
            ..Devices::default()
        };
        let text = devices.to_string();
        assert!(text.contains("cameras:\n  [0] Webcam (default)"));
        assert!(text.contains("microphones: none"));
        assert!(text.contains("speakers: none"));
        assert!(text.contains("note: audio input"));
    }
}
