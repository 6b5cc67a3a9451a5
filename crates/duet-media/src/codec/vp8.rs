//! VP8 encoder and decoder: a thin safe wrapper over the system libvpx, configured for real-time calls.
//!
//! The encoder settings follow libwebrtc's `LibvpxVp8Encoder` for a single camera stream: one-pass CBR with
//! no lag, a 1000/500/600 ms rate buffer, under/overshoot 100/15 %, quantizer 2..56, frame dropping when the
//! buffer runs dry, max intra-frame size tied to the frame rate, one token partition, static threshold 1,
//! automatic keyframes at most every 3000 frames plus keyframes on demand (PLI). Unlike libwebrtc, temporal
//! denoising is off by default (see [`Vp8Config::denoise`]).
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::os::raw::{c_int, c_uint, c_ulong};
use std::ptr;

use tracing::{debug, info};
use vpx_sys::{
    VPX_DECODER_ABI_VERSION, VPX_DL_REALTIME, VPX_EFLAG_FORCE_KF, VPX_ENCODER_ABI_VERSION, VPX_ERROR_RESILIENT_DEFAULT,
    VPX_FRAME_IS_KEY, vp8_dec_control_id, vp8e_enc_control_id, vp8e_token_partitions, vpx_codec_ctx_t,
    vpx_codec_cx_pkt_kind, vpx_codec_dec_cfg_t, vpx_codec_enc_cfg_t, vpx_codec_err_t, vpx_enc_pass, vpx_image_t,
    vpx_img_fmt, vpx_kf_mode, vpx_rational, vpx_rc_mode,
};

use crate::{MediaError, VideoFrame};

const CODEC: &str = "VP8";
/// Time base of the presentation timestamps given to libvpx: microseconds, like frame timestamps.
const TIMEBASE_DEN: c_int = 1_000_000;

/// Settings of a [`Vp8Encoder`]. [`Vp8Config::new`] gives the real-time defaults; adjust fields as needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vp8Config {
    /// Frame width (frames of another size make the encoder re-create itself at that size).
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Nominal frame rate, used for frame durations and the intra-frame size cap.
    pub fps: u32,
    /// Target bitrate in kbit/s (changeable on the fly with [`Vp8Encoder::set_bitrate`]).
    pub bitrate_kbps: u32,
    /// libvpx `cpu-used`, -16..=16. In real-time mode a negative value is a fixed speed level (higher = faster,
    /// lower quality); a positive one lets libvpx adapt the speed to the frame deadline. Default -6, as
    /// libwebrtc on desktops: measured here (2 cores, 720p 1.5 Mb/s, panning noisy pattern) it encodes about
    /// 220-270 fps on one thread, and -8 / -10 are only 5-30 % faster for 1.5-2 dB less PSNR. Go faster
    /// only when the CPU is short (see `benches/codec.rs`).
    pub cpu_used: i32,
    /// Encoder threads; `None` follows libwebrtc: 2 above 640x480 with at least 3 cores, otherwise 1.
    /// libvpx's VP8 threads synchronise by spinning, so on a busy 2-core machine a second thread makes
    /// encoding collapse (measured at 720p with both cores loaded: 1 thread 244 fps, 2 threads 34 fps with
    /// 176 ms frames).
    pub threads: Option<u32>,
    /// Longest run of frames without a keyframe (default 3000, as libwebrtc). Keyframes on demand come from
    /// [`Vp8Encoder::request_keyframe`].
    pub keyframe_interval: u32,
    /// Error-resilient mode: no reliance on probability contexts carried across frames, so a lost frame
    /// does not corrupt the entropy decoding of the next ones (costs a few % of bits). Default on.
    pub error_resilient: bool,
    /// Let rate control skip frames when the rate buffer runs dry (default on): keeps latency down on
    /// bandwidth drops. A skipped frame makes [`Vp8Encoder::encode`] return `Ok(None)`.
    pub frame_dropping: bool,
    /// libvpx's temporal denoiser on luma (default off). libwebrtc turns it on for cameras, where it saves
    /// some bits on sensor noise at a CPU cost. It must stay off for synthetic video: it smears the frame
    /// marker's cells wherever they are not aligned to 16x16 macroblocks (measured: 60-70 % of markers
    /// unreadable at 320x180 and 480x270 at ladder bitrates, none with it off).
    pub denoise: bool,
    /// Lowest quantizer, 0..=63 (default 2).
    pub min_quantizer: u32,
    /// Highest quantizer, 0..=63 (default 56, as libwebrtc): caps how blocky video gets before frames drop.
    pub max_quantizer: u32,
}

impl Vp8Config {
    /// Real-time defaults for `width` x `height` at `fps` frames per second and `bitrate_kbps` kbit/s.
    #[must_use]
    pub fn new(width: u32, height: u32, fps: u32, bitrate_kbps: u32) -> Self {
        Self {
            width,
            height,
            fps,
            bitrate_kbps,
            cpu_used: -6,
            threads: None,
            keyframe_interval: 3000,
            error_resilient: true,
            frame_dropping: true,
            denoise: false,
            min_quantizer: 2,
            max_quantizer: 56,
        }
    }

    fn validate(&self) -> Result<(), MediaError> {
        VideoFrame::buffer_size(self.width, self.height)?;
        let checks = [
            (self.fps == 0 || self.fps > 240, format!("frame rate {} out of range (1..=240)", self.fps)),
            (
                self.bitrate_kbps == 0 || self.bitrate_kbps > 100_000,
                format!("bitrate {} kbit/s out of range (1..=100000)", self.bitrate_kbps),
            ),
            (!(-16..=16).contains(&self.cpu_used), format!("cpu_used {} out of range (-16..=16)", self.cpu_used)),
            (
                self.min_quantizer > self.max_quantizer || self.max_quantizer > 63,
                format!("quantizer range {}..={} invalid (within 0..=63)", self.min_quantizer, self.max_quantizer),
            ),
            (self.threads.is_some_and(|t| t == 0 || t > 16), "threads must be 1..=16".to_owned()),
        ];
        match checks.into_iter().find(|(bad, _)| *bad) {
            Some((_, message)) => Err(MediaError::InvalidArgument(message)),
            None => Ok(()),
        }
    }

    fn thread_count(&self) -> u32 {
        self.threads.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            if cores >= 3 && self.width * self.height > 640 * 480 { 2 } else { 1 }
        })
    }

    /// libwebrtc's cap on keyframe size, as a percentage of the per-frame bandwidth.
    fn max_intra_bitrate_pct(&self) -> c_uint {
        // 600 ms optimal buffer * 0.5 * fps / 10, at least 300 %.
        (600 * self.fps / 20).max(300)
    }
}

/// One encoded VP8 frame, ready for RTP packetisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// The VP8 bitstream of the frame.
    pub data: Vec<u8>,
    /// True for a keyframe (decodable on its own).
    pub keyframe: bool,
    /// The raw frame's timestamp, passed through.
    pub timestamp_us: u64,
    /// Coded width.
    pub width: u32,
    /// Coded height.
    pub height: u32,
}

/// A libvpx context, destroyed on drop.
struct Context {
    ctx: Box<vpx_codec_ctx_t>,
}

impl Context {
    fn zeroed() -> Box<vpx_codec_ctx_t> {
        // SAFETY: vpx_codec_ctx_t is a C struct of pointers, integers, a union of pointers and a C enum whose
        // zero value (VPX_CODEC_OK) is valid: the all-zero pattern is a valid, uninitialised context.
        Box::new(unsafe { MaybeUninit::<vpx_codec_ctx_t>::zeroed().assume_init() })
    }

    fn error(&mut self) -> String {
        // SAFETY: the context was initialised; vpx_codec_error returns a static or context-owned C string
        // (never null for a non-null context), copied out before the context is used again.
        let message = unsafe { cstr(vpx_sys::vpx_codec_error(&mut *self.ctx)) };
        // SAFETY: as above; the detail may be null, which `cstr` handles.
        let detail = unsafe { cstr(vpx_sys::vpx_codec_error_detail(&mut *self.ctx)) };
        if detail.is_empty() { message } else { format!("{message} ({detail})") }
    }

    fn control(&mut self, id: c_int, value: c_int) -> Result<(), MediaError> {
        // SAFETY: the context is initialised; every control this module sets takes an int (or unsigned int /
        // enum, passed with the same size and representation) as its single variadic argument.
        let status = unsafe { vpx_sys::vpx_codec_control_(&mut *self.ctx, id, value) };
        if status == vpx_codec_err_t::VPX_CODEC_OK {
            Ok(())
        } else {
            Err(MediaError::Codec { codec: CODEC, operation: "control", message: format!("{id}: {}", self.error()) })
        }
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: a `Context` only exists once init succeeded, and it is destroyed exactly once, here.
        unsafe {
            vpx_sys::vpx_codec_destroy(&mut *self.ctx);
        }
    }
}

/// Reads a C string, "" for null.
///
/// # Safety
/// `text` must be null or point to a NUL-terminated string valid for the duration of the call.
unsafe fn cstr(text: *const std::os::raw::c_char) -> String {
    if text.is_null() {
        String::new()
    } else {
        // SAFETY: non-null and NUL-terminated per this function's contract.
        unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned()
    }
}

fn err_string(status: vpx_codec_err_t) -> String {
    // SAFETY: vpx_codec_err_to_string returns a pointer to a static string for any status value.
    unsafe { cstr(vpx_sys::vpx_codec_err_to_string(status)) }
}

/// A real-time VP8 encoder.
///
/// Feed I420 frames with [`encode`](Vp8Encoder::encode); each call returns the encoded frame, or `None` when
/// rate control skipped it. Frames of a new size re-create the encoder at that size (the next frame is a
/// keyframe), which is how the bitrate ladder switches resolution.
///
/// `Vp8Encoder` is `Send` but not `Sync`: run it on one thread at a time (a dedicated encoder thread).
pub struct Vp8Encoder {
    context: Context,
    cfg: Box<vpx_codec_enc_cfg_t>,
    config: Vp8Config,
    keyframe_requested: bool,
    first_timestamp_us: Option<u64>,
    last_pts: i64,
}

// SAFETY: a libvpx codec context has no thread affinity (no thread-local state, no handles bound to the
// creating thread; its worker threads, if any, belong to the context and are joined on destroy). All access
// goes through `&mut self`, so the context is never used from two threads at once; moving it between threads
// between calls is sound. The type is deliberately not `Sync`.
unsafe impl Send for Vp8Encoder {}

impl Vp8Encoder {
    /// Creates an encoder with `config`.
    pub fn new(config: Vp8Config) -> Result<Self, MediaError> {
        config.validate()?;
        let mut cfg = default_encoder_config()?;
        apply_config(&mut cfg, &config);
        let mut ctx = Context::zeroed();
        // SAFETY: ctx points to a zeroed context and cfg to a fully initialised configuration, both boxed so
        // their addresses stay stable (libvpx keeps a pointer to cfg until the VP8 encoder copies it in init).
        // The ABI version is the one the bindings were generated for (libvpx 1.12).
        let status = unsafe {
            vpx_sys::vpx_codec_enc_init_ver(
                &mut *ctx,
                vpx_sys::vpx_codec_vp8_cx(),
                &*cfg,
                0,
                VPX_ENCODER_ABI_VERSION as c_int,
            )
        };
        if status != vpx_codec_err_t::VPX_CODEC_OK {
            // Init failed: libvpx has already released what it allocated, so there is no context to destroy.
            return Err(MediaError::Codec { codec: CODEC, operation: "encoder init", message: err_string(status) });
        }
        let mut context = Context { ctx };
        context.control(vp8e_enc_control_id::VP8E_SET_CPUUSED as c_int, config.cpu_used)?;
        context.control(vp8e_enc_control_id::VP8E_SET_NOISE_SENSITIVITY as c_int, c_int::from(config.denoise))?;
        context.control(vp8e_enc_control_id::VP8E_SET_STATIC_THRESHOLD as c_int, 1)?;
        context.control(
            vp8e_enc_control_id::VP8E_SET_TOKEN_PARTITIONS as c_int,
            vp8e_token_partitions::VP8_ONE_TOKENPARTITION as c_int,
        )?;
        context.control(
            vp8e_enc_control_id::VP8E_SET_MAX_INTRA_BITRATE_PCT as c_int,
            config.max_intra_bitrate_pct() as c_int,
        )?;
        info!(
            width = config.width,
            height = config.height,
            fps = config.fps,
            kbps = config.bitrate_kbps,
            cpu_used = config.cpu_used,
            threads = cfg.g_threads,
            "VP8 encoder created"
        );
        Ok(Self { context, cfg, config, keyframe_requested: false, first_timestamp_us: None, last_pts: -1 })
    }

    /// The current settings (reflecting bitrate and size changes).
    #[must_use]
    pub fn config(&self) -> &Vp8Config {
        &self.config
    }

    /// Changes the target bitrate from the next frame on, without a keyframe.
    pub fn set_bitrate(&mut self, kbps: u32) -> Result<(), MediaError> {
        Vp8Config { bitrate_kbps: kbps, ..self.config.clone() }.validate()?;
        self.cfg.rc_target_bitrate = kbps;
        // SAFETY: the context is initialised and cfg is a valid configuration (libvpx copies it).
        let status = unsafe { vpx_sys::vpx_codec_enc_config_set(&mut *self.context.ctx, &*self.cfg) };
        if status != vpx_codec_err_t::VPX_CODEC_OK {
            self.cfg.rc_target_bitrate = self.config.bitrate_kbps;
            let message = self.context.error();
            return Err(MediaError::Codec { codec: CODEC, operation: "set bitrate", message });
        }
        debug!(from = self.config.bitrate_kbps, to = kbps, "VP8 bitrate changed");
        self.config.bitrate_kbps = kbps;
        Ok(())
    }

    /// Makes the next encoded frame a keyframe (for a PLI/FIR from the receiver). The request stays pending
    /// until a keyframe actually comes out.
    pub fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    /// Applies new settings: a bitrate-only change is applied in place, anything else re-creates the encoder
    /// (the next frame is then a keyframe).
    pub fn reconfigure(&mut self, config: Vp8Config) -> Result<(), MediaError> {
        if config == self.config {
            return Ok(());
        }
        if (Vp8Config { bitrate_kbps: config.bitrate_kbps, ..self.config.clone() }) == config {
            return self.set_bitrate(config.bitrate_kbps);
        }
        *self = Self::new(config)?;
        Ok(())
    }

    /// Encodes one frame. Returns `Ok(None)` when rate control skipped the frame (see
    /// [`Vp8Config::frame_dropping`]). A frame of another size than the configured one re-creates the encoder.
    ///
    /// Rate control reads the frames' timestamps: they must advance at the real frame rate (capture times
    /// from a live or paced source). Frames stamped closer together look like a higher frame rate and get
    /// fewer bits each, or are skipped.
    pub fn encode(&mut self, frame: &VideoFrame) -> Result<Option<EncodedFrame>, MediaError> {
        if (frame.width(), frame.height()) != (self.config.width, self.config.height) {
            info!(
                from = format!("{}x{}", self.config.width, self.config.height),
                to = format!("{}x{}", frame.width(), frame.height()),
                "VP8 encoder resized"
            );
            let first_timestamp_us = self.first_timestamp_us;
            let last_pts = self.last_pts;
            self.reconfigure(Vp8Config { width: frame.width(), height: frame.height(), ..self.config.clone() })?;
            self.first_timestamp_us = first_timestamp_us;
            self.last_pts = last_pts;
        }
        let first = *self.first_timestamp_us.get_or_insert(frame.timestamp_us());
        let pts = i64::try_from(frame.timestamp_us().saturating_sub(first)).unwrap_or(i64::MAX);
        // libvpx needs strictly increasing timestamps; a repeated or backwards capture time gets nudged.
        let pts = pts.max(self.last_pts + 1);
        self.last_pts = pts;
        let duration = c_ulong::from(1_000_000 / self.config.fps);
        let flags = if self.keyframe_requested { VPX_EFLAG_FORCE_KF as vpx_sys::vpx_enc_frame_flags_t } else { 0 };

        let image = wrap_i420(frame)?;
        // SAFETY: the context is initialised; `image` describes `frame`'s buffer, which outlives the call and
        // which the VP8 encoder only reads (it copies the picture into its own lookahead buffer).
        let status = unsafe {
            vpx_sys::vpx_codec_encode(
                &mut *self.context.ctx,
                &image,
                pts,
                duration,
                flags,
                c_ulong::from(VPX_DL_REALTIME),
            )
        };
        if status != vpx_codec_err_t::VPX_CODEC_OK {
            let message = self.context.error();
            return Err(MediaError::Codec { codec: CODEC, operation: "encode", message });
        }

        let mut data = Vec::new();
        let mut keyframe = false;
        let mut iter: vpx_sys::vpx_codec_iter_t = ptr::null();
        loop {
            // SAFETY: the context is initialised and `iter` is the iterator libvpx hands back between calls.
            let packet = unsafe { vpx_sys::vpx_codec_get_cx_data(&mut *self.context.ctx, &mut iter) };
            if packet.is_null() {
                break;
            }
            // SAFETY: a non-null packet points to a valid vpx_codec_cx_pkt_t owned by the context, valid until
            // the next encode call; `kind` says which union member is live.
            let packet = unsafe { &*packet };
            if packet.kind != vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT {
                continue;
            }
            // SAFETY: for frame packets the `frame` member is live; buf/sz describe the coded frame, which
            // stays valid until the next encode call and is copied out here.
            let coded = unsafe {
                let frame_packet = packet.data.frame;
                match usize::try_from(frame_packet.sz) {
                    Ok(size) if !frame_packet.buf.is_null() => {
                        std::slice::from_raw_parts(frame_packet.buf as *const u8, size)
                    }
                    _ => &[][..],
                }
            };
            data.extend_from_slice(coded);
            // SAFETY: as above, the `frame` member is live.
            keyframe |= unsafe { packet.data.frame.flags } & VPX_FRAME_IS_KEY != 0;
        }
        if data.is_empty() {
            debug!(timestamp_us = frame.timestamp_us(), "VP8 rate control dropped a frame");
            return Ok(None);
        }
        if keyframe {
            self.keyframe_requested = false;
        }
        Ok(Some(EncodedFrame {
            data,
            keyframe,
            timestamp_us: frame.timestamp_us(),
            width: self.config.width,
            height: self.config.height,
        }))
    }
}

fn default_encoder_config() -> Result<Box<vpx_codec_enc_cfg_t>, MediaError> {
    let mut cfg = Box::new(MaybeUninit::<vpx_codec_enc_cfg_t>::uninit());
    // SAFETY: vpx_codec_enc_config_default fills the whole struct when it returns OK (usage 0 is the only
    // usage VP8 defines); the value is only read after that check.
    let status = unsafe { vpx_sys::vpx_codec_enc_config_default(vpx_sys::vpx_codec_vp8_cx(), cfg.as_mut_ptr(), 0) };
    if status != vpx_codec_err_t::VPX_CODEC_OK {
        return Err(MediaError::Codec { codec: CODEC, operation: "default config", message: err_string(status) });
    }
    // SAFETY: initialised by the successful call above.
    Ok(unsafe { cfg.assume_init() })
}

fn apply_config(cfg: &mut vpx_codec_enc_cfg_t, config: &Vp8Config) {
    cfg.g_w = config.width;
    cfg.g_h = config.height;
    cfg.g_threads = config.thread_count();
    cfg.g_timebase = vpx_rational { num: 1, den: TIMEBASE_DEN };
    cfg.g_error_resilient = if config.error_resilient { VPX_ERROR_RESILIENT_DEFAULT } else { 0 };
    cfg.g_pass = vpx_enc_pass::VPX_RC_ONE_PASS;
    cfg.g_lag_in_frames = 0;
    cfg.rc_end_usage = vpx_rc_mode::VPX_CBR;
    cfg.rc_target_bitrate = config.bitrate_kbps;
    cfg.rc_min_quantizer = config.min_quantizer;
    cfg.rc_max_quantizer = config.max_quantizer;
    cfg.rc_undershoot_pct = 100;
    cfg.rc_overshoot_pct = 15;
    cfg.rc_buf_initial_sz = 500;
    cfg.rc_buf_optimal_sz = 600;
    cfg.rc_buf_sz = 1000;
    cfg.rc_dropframe_thresh = if config.frame_dropping { 30 } else { 0 };
    cfg.rc_resize_allowed = 0;
    cfg.kf_mode = vpx_kf_mode::VPX_KF_AUTO;
    cfg.kf_min_dist = 0;
    cfg.kf_max_dist = config.keyframe_interval;
}

/// Describes `frame`'s contiguous I420 buffer as a vpx_image_t (no copy).
fn wrap_i420(frame: &VideoFrame) -> Result<vpx_image_t, MediaError> {
    // SAFETY: vpx_image_t is a C struct of integers, pointers and C enums whose zero values are valid.
    let mut image = unsafe { MaybeUninit::<vpx_image_t>::zeroed().assume_init() };
    let base = frame.data().as_ptr().cast_mut();
    // SAFETY: `image` is a valid struct to fill; `base` points to the frame's buffer (only read by libvpx).
    // vpx_img_wrap fills format, sizes and chroma shifts; planes and strides are then set to this crate's
    // layout (vpx_img_wrap would pad odd widths).
    let wrapped = unsafe {
        vpx_sys::vpx_img_wrap(&mut image, vpx_img_fmt::VPX_IMG_FMT_I420, frame.width(), frame.height(), 1, base)
    };
    if wrapped.is_null() {
        return Err(MediaError::Codec { codec: CODEC, operation: "wrap image", message: "vpx_img_wrap failed".into() });
    }
    let luma = frame.y().len();
    let chroma = frame.u().len();
    // SAFETY: both offsets are within the frame's buffer (Y then U then V, contiguous).
    image.planes = unsafe { [base, base.add(luma), base.add(luma + chroma), ptr::null_mut()] };
    image.stride = [frame.width() as c_int, frame.chroma_width() as c_int, frame.chroma_width() as c_int, 0];
    Ok(image)
}

/// True if `data` is a VP8 keyframe (bit 0 of the frame tag clear and the keyframe start code present).
#[must_use]
pub fn is_vp8_keyframe(data: &[u8]) -> bool {
    data.len() >= 10 && data[0] & 1 == 0 && data[3..6] == [0x9d, 0x01, 0x2a]
}

/// The largest picture [`Vp8Decoder`] accepts, in pixels: 4096x2304 (above 4K UHD, 3840x2160). libvpx
/// allocates its frame buffers for whatever size a keyframe declares (16383x16383 costs it about 2 GB).
pub const MAX_DECODE_PIXELS: u64 = 4096 * 2304;

/// The picture size a VP8 keyframe declares (RFC 6386 section 9.1: 14 bits each after the start code,
/// the top 2 bits being the scaling mode); `None` if `data` is not a keyframe.
#[must_use]
pub fn vp8_keyframe_size(data: &[u8]) -> Option<(u32, u32)> {
    let dimension = |at: usize| u32::from(u16::from_le_bytes([data[at], data[at + 1]]) & 0x3fff);
    is_vp8_keyframe(data).then(|| (dimension(6), dimension(8)))
}

/// A VP8 decoder producing I420 [`VideoFrame`]s.
///
/// Errors tell the caller to ask the sender for a keyframe ([`MediaError::needs_keyframe`]): a frame libvpx
/// rejects or flags as corrupt gives [`MediaError::CorruptFrame`], and from then on (as at the start of the
/// stream) delta frames give [`MediaError::KeyframeRequired`] without being decoded, so a broken reference
/// never turns into smeared pictures. The next keyframe resumes decoding. A keyframe larger than
/// [`MAX_DECODE_PIXELS`] is refused before libvpx sees it ([`MediaError::FrameTooLarge`]).
///
/// `Send` but not `Sync`, like [`Vp8Encoder`].
pub struct Vp8Decoder {
    context: Context,
    awaiting_keyframe: bool,
}

// SAFETY: as for `Vp8Encoder`: a libvpx context has no thread affinity and is only used through `&mut self`.
unsafe impl Send for Vp8Decoder {}

impl Vp8Decoder {
    /// Creates a decoder (one thread: VP8 decoding of 720p costs a few ms a frame).
    pub fn new() -> Result<Self, MediaError> {
        let cfg = vpx_codec_dec_cfg_t { threads: 1, w: 0, h: 0 };
        let mut ctx = Context::zeroed();
        // SAFETY: ctx points to a zeroed, boxed context; cfg is valid for the call (the decoder copies it).
        let status = unsafe {
            vpx_sys::vpx_codec_dec_init_ver(
                &mut *ctx,
                vpx_sys::vpx_codec_vp8_dx(),
                &cfg,
                0,
                VPX_DECODER_ABI_VERSION as c_int,
            )
        };
        if status != vpx_codec_err_t::VPX_CODEC_OK {
            return Err(MediaError::Codec { codec: CODEC, operation: "decoder init", message: err_string(status) });
        }
        Ok(Self { context: Context { ctx }, awaiting_keyframe: true })
    }

    /// True until the first keyframe, and again after a decoding error until the next keyframe.
    #[must_use]
    pub fn awaiting_keyframe(&self) -> bool {
        self.awaiting_keyframe
    }

    /// Decodes one complete VP8 frame; the output carries `timestamp_us`. `Ok(None)` for a frame that is
    /// not meant to be shown (a hidden reference frame).
    pub fn decode(&mut self, data: &[u8], timestamp_us: u64) -> Result<Option<VideoFrame>, MediaError> {
        let size = vp8_keyframe_size(data);
        if let Some((width, height)) = size.filter(|&(w, h)| u64::from(w) * u64::from(h) > MAX_DECODE_PIXELS) {
            // The frames predicted from it cannot be decoded either.
            self.awaiting_keyframe = true;
            return Err(MediaError::FrameTooLarge { width, height });
        }
        let keyframe = size.is_some();
        if self.awaiting_keyframe && !keyframe {
            return Err(MediaError::KeyframeRequired);
        }
        let length = c_uint::try_from(data.len())
            .ok()
            .filter(|&l| l > 0)
            .ok_or_else(|| self.corrupt(format!("frame of {} bytes", data.len())))?;
        // SAFETY: the context is initialised; data/length describe a readable buffer for the call.
        let status =
            unsafe { vpx_sys::vpx_codec_decode(&mut *self.context.ctx, data.as_ptr(), length, ptr::null_mut(), 0) };
        if status != vpx_codec_err_t::VPX_CODEC_OK {
            let message = self.context.error();
            return Err(self.corrupt(message));
        }
        let mut corrupted: c_int = 0;
        // SAFETY: VP8D_GET_FRAME_CORRUPTED takes an int* that it writes; `corrupted` outlives the call.
        let status = unsafe {
            vpx_sys::vpx_codec_control_(
                &mut *self.context.ctx,
                vp8_dec_control_id::VP8D_GET_FRAME_CORRUPTED as c_int,
                &mut corrupted as *mut c_int,
            )
        };
        if status == vpx_codec_err_t::VPX_CODEC_OK && corrupted != 0 {
            return Err(self.corrupt("decoder flagged the frame as corrupt".to_owned()));
        }
        let frame = self.next_image(timestamp_us)?;
        if keyframe {
            self.awaiting_keyframe = false;
        }
        Ok(frame)
    }

    fn corrupt(&mut self, message: String) -> MediaError {
        self.awaiting_keyframe = true;
        MediaError::CorruptFrame { codec: CODEC, message }
    }

    /// Copies the decoded picture out of libvpx, if the frame is shown (VP8 yields at most one per frame).
    fn next_image(&mut self, timestamp_us: u64) -> Result<Option<VideoFrame>, MediaError> {
        let mut iter: vpx_sys::vpx_codec_iter_t = ptr::null();
        // SAFETY: the context is initialised; `iter` starts null as libvpx requires.
        let image = unsafe { vpx_sys::vpx_codec_get_frame(&mut *self.context.ctx, &mut iter) };
        if image.is_null() {
            return Ok(None);
        }
        // SAFETY: a non-null image is owned by the decoder and valid until the next decode call.
        let image = unsafe { &*image };
        if image.fmt != vpx_img_fmt::VPX_IMG_FMT_I420 || image.d_w == 0 || image.d_h == 0 {
            return Err(self.corrupt(format!("unexpected picture format {:?} {}x{}", image.fmt, image.d_w, image.d_h)));
        }
        let (width, height) = (image.d_w, image.d_h);
        let (cw, ch) = (width.div_ceil(2) as usize, height.div_ceil(2) as usize);
        let dims = [(width as usize, height as usize), (cw, ch), (cw, ch)];
        let mut planes: [(&[u8], usize); 3] = [(&[], 0); 3];
        for (i, (plane, (w, h))) in planes.iter_mut().zip(dims).enumerate() {
            let stride = usize::try_from(image.stride[i]).unwrap_or(0);
            if stride < w || image.planes[i].is_null() {
                return Err(self.corrupt(format!("invalid plane {i} (stride {})", image.stride[i])));
            }
            // SAFETY: libvpx guarantees each plane holds `h` rows of `stride` bytes (the last row at least
            // `w`); the slice covers exactly that and lives until the next decode call, after the copy below.
            *plane = (unsafe { std::slice::from_raw_parts(image.planes[i], stride * (h - 1) + w) }, stride);
        }
        VideoFrame::from_planes(width, height, timestamp_us, planes).map(Some)
    }
}
