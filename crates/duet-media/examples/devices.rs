//! Lists cameras, microphones and speakers, then tries to open the default of each and says what happened.
//!
//! `cargo run -p duet-media --example devices`

use duet_media::{
    AudioSource, CameraConfig, CameraSource, MediaClock, MicrophoneConfig, MicrophoneSource, SpeakerConfig,
    SpeakerSink, VideoSource, list_devices,
};

fn main() {
    print!("{}", list_devices());
    let clock = MediaClock::new();
    match CameraSource::open(CameraConfig::default(), clock) {
        Ok(mut camera) => {
            let format = camera.format();
            println!("camera {}: {}x{} at {}", camera.name(), format.width, format.height, format.frame_rate);
            match camera.next_frame() {
                Ok(_) => println!("camera delivered a frame"),
                Err(error) => println!("camera: {error}"),
            }
        }
        Err(error) => println!("{error}"),
    }
    match MicrophoneSource::open(MicrophoneConfig::default(), clock) {
        Ok(mut microphone) => match microphone.next_frame() {
            Ok(_) => println!("microphone {} delivered a frame", microphone.name()),
            Err(error) => println!("microphone: {error}"),
        },
        Err(error) => println!("{error}"),
    }
    match SpeakerSink::open(SpeakerConfig::default()) {
        Ok(speaker) => println!("speaker {} is open", speaker.name()),
        Err(error) => println!("{error}"),
    }
}
