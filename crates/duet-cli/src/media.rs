//! Opening the media a `duet` command sends (see [`duet_core::sources`]), with notices printed.

use duet_core::call::CallMedia;
use duet_core::media::DiscardVideoSink;
use duet_core::sources::{self, AudioSpec, VideoSpec};

use crate::output::Printer;

/// Opens the sources; a missing camera or microphone is printed as a notice and the call
/// goes on without it; an unreadable file is an error.
pub fn open(video: &VideoSpec, audio: &AudioSpec, out: &mut Printer) -> Result<CallMedia, String> {
    let opened = sources::open(video, audio, Box::new(DiscardVideoSink))?;
    for n in &opened.notices {
        out.notice(n);
    }
    Ok(opened.media)
}
