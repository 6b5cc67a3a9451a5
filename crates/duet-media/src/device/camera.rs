//! Cameras through nokhwa (V4L2 on Linux, AVFoundation on macOS, Media Foundation on Windows).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType};
use nokhwa::{Buffer, Camera};
use tracing::{info, warn};

use super::DeviceInfo;
use crate::convert::{RgbOrder, gray_to_i420, nv12_to_i420, rgb24_to_i420, yuyv_to_i420};
use crate::{FrameRate, MediaClock, MediaError, VideoFormat, VideoFrame, VideoSource};

/// How long `open` waits for the camera to start streaming.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `next_frame` waits for a frame before reporting the camera as stalled.
const FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// Consecutive capture errors after which the camera counts as lost.
const MAX_CAPTURE_ERRORS: u32 = 10;

/// What to open: which camera, and the size and rate to get as close to as the camera allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CameraConfig {
    /// The camera's index as listed by [`list_devices`](crate::list_devices) (`/dev/videoN` on Linux).
    pub index: u32,
    /// Wanted width.
    pub width: u32,
    /// Wanted height.
    pub height: u32,
    /// Wanted frame rate.
    pub fps: u32,
}

impl Default for CameraConfig {
    /// The first camera at 1280x720, 30 fps.
    fn default() -> Self {
        Self { index: 0, width: 1280, height: 720, fps: 30 }
    }
}

/// A live camera as a [`VideoSource`].
///
/// Capture runs on its own thread ("duet-camera"), which converts each frame to I420 and keeps only the
/// newest one: [`next_frame`](VideoSource::next_frame) blocks until a frame newer than the last one returned
/// is there, so a slow consumer skips frames instead of building up latency. Frames come at the camera's
/// native size (see [`format`](VideoSource::format)); scale them for the bitrate ladder. Timestamps are the
/// clock's reading when the driver handed the frame over.
///
/// With no camera, or one that cannot be opened, [`CameraSource::open`] returns [`MediaError::NoCamera`]
/// (quickly, without panicking) so the call can go on receive-only.
pub struct CameraSource {
    name: String,
    format: VideoFormat,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CameraSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CameraSource").field("name", &self.name).field("format", &self.format).finish_non_exhaustive()
    }
}

/// The newest frame, handed from the capture thread to the consumer.
struct Shared {
    slot: Mutex<Slot>,
    ready: Condvar,
    stop: AtomicBool,
}

#[derive(Default)]
struct Slot {
    frame: Option<VideoFrame>,
    /// Set when the capture thread ends, with the reason.
    ended: Option<String>,
    skipped: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        // A panic while holding this lock leaves plain data behind: keep using it.
        self.slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn put(&self, frame: VideoFrame) {
        let mut slot = self.lock();
        if slot.frame.replace(frame).is_some() {
            slot.skipped += 1;
        }
        self.ready.notify_one();
    }

    fn end(&self, reason: String) {
        self.lock().ended = Some(reason);
        self.ready.notify_one();
    }
}

impl CameraSource {
    /// Opens the camera `config.index` at the format closest to the wanted size and rate.
    pub fn open(config: CameraConfig, clock: MediaClock) -> Result<Self, MediaError> {
        let cameras = list().map_err(|reason| MediaError::NoCamera { reason })?;
        let Some(camera) = cameras.iter().find(|c| c.id == config.index.to_string()) else {
            let reason = if cameras.is_empty() {
                "no camera found".to_owned()
            } else {
                let present: Vec<String> = cameras.iter().map(|c| format!("{} ({})", c.id, c.name)).collect();
                format!("camera {} not found; present: {}", config.index, present.join(", "))
            };
            return Err(MediaError::NoCamera { reason });
        };
        let name = camera.name.clone();
        let shared = Arc::new(Shared { slot: Mutex::default(), ready: Condvar::new(), stop: AtomicBool::new(false) });
        let (init_tx, init_rx) = mpsc::sync_channel(1);
        let thread_shared = shared.clone();
        let thread_name = name.clone();
        thread::Builder::new()
            .name("duet-camera".into())
            .spawn(move || capture(config, clock, &thread_name, &thread_shared, &init_tx))
            .map_err(|e| MediaError::NoCamera { reason: format!("cannot start the capture thread: {e}") })?;
        let started = match init_rx.recv_timeout(OPEN_TIMEOUT) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(format!("did not start within {} s", OPEN_TIMEOUT.as_secs())),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err("the capture thread failed".to_owned()),
        };
        match started {
            Ok(format) => {
                info!(camera = %name, width = format.width, height = format.height, rate = %format.frame_rate, "camera opened");
                Ok(Self { name, format, shared })
            }
            Err(reason) => {
                shared.stop.store(true, Ordering::Relaxed);
                Err(MediaError::NoCamera { reason: format!("{name}: {reason}") })
            }
        }
    }

    /// The camera's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Frames the capture thread replaced before they were taken (the consumer was slower than the camera).
    #[must_use]
    pub fn skipped_frames(&self) -> u64 {
        self.shared.lock().skipped
    }
}

impl VideoSource for CameraSource {
    fn format(&self) -> VideoFormat {
        self.format
    }

    fn next_frame(&mut self) -> Result<Option<VideoFrame>, MediaError> {
        let deadline = Instant::now() + FRAME_TIMEOUT;
        let mut slot = self.shared.lock();
        loop {
            if let Some(frame) = slot.frame.take() {
                return Ok(Some(frame));
            }
            if let Some(reason) = &slot.ended {
                return Err(MediaError::DeviceLost { device: format!("camera {}", self.name), reason: reason.clone() });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(MediaError::DeviceLost {
                    device: format!("camera {}", self.name),
                    reason: format!("no frame for {} s", FRAME_TIMEOUT.as_secs()),
                });
            }
            slot = self.shared.ready.wait_timeout(slot, deadline - now).map_or_else(|e| e.into_inner().0, |r| r.0);
        }
    }
}

impl Drop for CameraSource {
    fn drop(&mut self) {
        // The capture thread sees this after its current frame and closes the camera. It is not joined: a
        // stalled driver must not block the caller.
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

/// The capture thread: opens the camera, reports the outcome on `init`, then captures until stopped.
fn capture(
    config: CameraConfig,
    clock: MediaClock,
    name: &str,
    shared: &Shared,
    init: &mpsc::SyncSender<Result<VideoFormat, String>>,
) {
    let mut camera = match open_camera(config) {
        Ok(camera) => camera,
        Err(reason) => {
            // The receiver may have given up waiting; nothing else to do then.
            let _ = init.send(Err(reason));
            return;
        }
    };
    let chosen = camera.camera_format();
    let format = VideoFormat {
        width: chosen.width(),
        height: chosen.height(),
        frame_rate: FrameRate::from_fps(chosen.frame_rate()),
    };
    if init.send(Ok(format)).is_err() {
        return;
    }
    let mut errors = 0;
    let reason = loop {
        if shared.stop.load(Ordering::Relaxed) {
            break "camera closed".to_owned();
        }
        match camera.frame() {
            Ok(buffer) => {
                errors = 0;
                match buffer_to_i420(&buffer, clock.now_us()) {
                    Ok(frame) => shared.put(frame),
                    Err(error) => warn!(camera = name, %error, "camera frame could not be converted; skipped"),
                }
            }
            Err(error) => {
                errors += 1;
                warn!(camera = name, %error, errors, "camera capture failed");
                if errors >= MAX_CAPTURE_ERRORS {
                    break format!("{errors} capture errors in a row, last: {error}");
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
    };
    if let Err(error) = camera.stop_stream() {
        warn!(camera = name, %error, "camera did not stop cleanly");
    }
    shared.end(reason);
}

fn open_camera(config: CameraConfig) -> Result<Camera, String> {
    let request = RequestedFormat::new::<RgbFormat>(RequestedFormatType::None);
    let mut camera = Camera::new(CameraIndex::Index(config.index), request).map_err(|e| e.to_string())?;
    let formats = camera.compatible_camera_formats().map_err(|e| format!("cannot list formats: {e}"))?;
    let chosen = choose_format(&formats, config).ok_or_else(|| "the camera offers no usable format".to_owned())?;
    camera
        .set_camera_requset(RequestedFormat::with_formats(RequestedFormatType::Exact(chosen), &[chosen.format()]))
        .map_err(|e| format!("cannot set format {chosen}: {e}"))?;
    camera.open_stream().map_err(|e| format!("cannot start streaming: {e}"))?;
    Ok(camera)
}

/// Picks the format closest to the request: first any that reaches the wanted rate (or at least 15 fps),
/// then the nearest size (a size below the request counts four times worse than one above, as upscaling loses
/// detail), then the nearest rate, then the cheapest pixel format to convert.
fn choose_format(formats: &[CameraFormat], config: CameraConfig) -> Option<CameraFormat> {
    let wanted_area = i64::from(config.width) * i64::from(config.height);
    let smooth_fps = config.fps.min(15);
    formats.iter().copied().min_by_key(|format| {
        let area = i64::from(format.width()) * i64::from(format.height());
        let size_penalty = if area >= wanted_area { area - wanted_area } else { (wanted_area - area) * 4 };
        let fps = i64::from(format.frame_rate());
        let wanted_fps = i64::from(config.fps);
        let fps_penalty = if fps >= wanted_fps { fps - wanted_fps } else { (wanted_fps - fps) * 4 };
        let conversion_cost = match format.format() {
            FrameFormat::NV12 => 0,
            FrameFormat::YUYV => 1,
            FrameFormat::MJPEG => 2,
            FrameFormat::RAWRGB | FrameFormat::RAWBGR => 3,
            FrameFormat::GRAY => 4,
        };
        (fps < i64::from(smooth_fps), size_penalty, fps_penalty, conversion_cost)
    })
}

/// Converts a captured frame to I420 (MJPEG through nokhwa's decoder, raw formats directly).
fn buffer_to_i420(buffer: &Buffer, timestamp_us: u64) -> Result<VideoFrame, MediaError> {
    let (width, height) = (buffer.resolution().width(), buffer.resolution().height());
    let data = buffer.buffer();
    match buffer.source_frame_format() {
        FrameFormat::YUYV => yuyv_to_i420(data, width, height, timestamp_us),
        FrameFormat::NV12 => nv12_to_i420(data, width, height, timestamp_us),
        FrameFormat::GRAY => gray_to_i420(data, width, height, timestamp_us),
        FrameFormat::RAWRGB => rgb24_to_i420(data, width, height, RgbOrder::Rgb, timestamp_us),
        FrameFormat::RAWBGR => rgb24_to_i420(data, width, height, RgbOrder::Bgr, timestamp_us),
        FrameFormat::MJPEG => {
            let mut rgb = vec![0; width as usize * height as usize * 3];
            buffer
                .decode_image_to_buffer::<RgbFormat>(&mut rgb)
                .map_err(|e| MediaError::InvalidArgument(format!("MJPEG frame does not decode: {e}")))?;
            rgb24_to_i420(&rgb, width, height, RgbOrder::Rgb, timestamp_us)
        }
    }
}

/// Lists cameras; `Err` with a reason if the backend fails (or panics).
pub(super) fn list() -> Result<Vec<DeviceInfo>, String> {
    let queried = catch_unwind(AssertUnwindSafe(|| nokhwa::query(ApiBackend::Auto)))
        .map_err(|_| "camera enumeration panicked".to_owned())?
        .map_err(|e| format!("cannot list cameras: {e}"))?;
    Ok(queried
        .iter()
        .enumerate()
        .map(|(position, info)| DeviceInfo {
            id: match info.index() {
                CameraIndex::Index(index) => index.to_string(),
                CameraIndex::String(id) => id.clone(),
            },
            name: info.human_name(),
            is_default: position == 0,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(width: u32, height: u32, format: FrameFormat, fps: u32) -> CameraFormat {
        CameraFormat::new_from(width, height, format, fps)
    }

    #[test]
    fn picks_the_closest_smooth_format() {
        let formats = [
            fmt(640, 480, FrameFormat::YUYV, 30),
            fmt(1280, 720, FrameFormat::YUYV, 10),
            fmt(1280, 720, FrameFormat::MJPEG, 30),
            fmt(1920, 1080, FrameFormat::MJPEG, 30),
        ];
        let want = |width, height, fps| CameraConfig { index: 0, width, height, fps };
        assert_eq!(choose_format(&formats, want(1280, 720, 30)), Some(formats[2]));
        assert_eq!(choose_format(&formats, want(640, 360, 30)), Some(formats[0]));
        assert_eq!(choose_format(&formats, want(1600, 900, 30)), Some(formats[3]));
        // Only a slow 720p: a smooth 480p wins.
        assert_eq!(choose_format(&formats[..2], want(1280, 720, 30)), Some(formats[0]));
        // Same size and rate: the cheaper conversion wins.
        let same = [fmt(1280, 720, FrameFormat::MJPEG, 30), fmt(1280, 720, FrameFormat::NV12, 30)];
        assert_eq!(choose_format(&same, want(1280, 720, 30)), Some(same[1]));
        assert_eq!(choose_format(&[], want(1280, 720, 30)), None);
    }

    #[test]
    fn converts_raw_buffers() {
        let yuyv =
            Buffer::new(nokhwa::utils::Resolution::new(2, 2), &[10, 100, 20, 200, 30, 110, 40, 210], FrameFormat::YUYV);
        let frame = buffer_to_i420(&yuyv, 7).unwrap();
        assert_eq!((frame.y(), frame.u(), frame.timestamp_us()), (&[10, 20, 30, 40][..], &[105][..], 7));
        let short = Buffer::new(nokhwa::utils::Resolution::new(4, 4), &[0; 3], FrameFormat::RAWRGB);
        assert!(buffer_to_i420(&short, 0).is_err());
    }
}
