//! Which camera, microphone and speaker a call uses, as devices come and go (sans-IO).
//!
//! The engine feeds the policy the user's choices, fresh device lists, and what happened when
//! it opened a device or a device stopped working; the policy answers with [`DeviceAction`]s:
//! open this device (or the system default), go without, tell the user something.
//!
//! The rules:
//! - The user's choice is used when present; otherwise the system default, else the first listed.
//! - A device that stops working is replaced by the default (or the first other one) with a
//!   notice; with none left the call goes on without it (receive-only video, a silent
//!   microphone, or no sound) and says so.
//! - The device that failed is not tried again until the lists change.
//! - When the lists change and the user's choice is back, or a device appears while the call
//!   has none of that kind, it is opened again.

use duet_media::{DeviceInfo, Devices};

/// A kind of device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// A camera.
    Camera,
    /// A microphone.
    Microphone,
    /// A speaker.
    Speaker,
}

impl DeviceKind {
    /// All kinds.
    pub const ALL: [DeviceKind; 3] = [DeviceKind::Camera, DeviceKind::Microphone, DeviceKind::Speaker];

    /// The word for it.
    #[must_use]
    pub fn noun(self) -> &'static str {
        match self {
            Self::Camera => "camera",
            Self::Microphone => "microphone",
            Self::Speaker => "speaker",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Camera => 0,
            Self::Microphone => 1,
            Self::Speaker => 2,
        }
    }

    fn list(self, devices: &Devices) -> &[DeviceInfo] {
        match self {
            Self::Camera => &devices.cameras,
            Self::Microphone => &devices.microphones,
            Self::Speaker => &devices.speakers,
        }
    }

    /// What the call does without one.
    fn without(self) -> &'static str {
        match self {
            Self::Camera => "your partner sees no video from you until you connect one",
            Self::Microphone => "your partner cannot hear you until you connect one",
            Self::Speaker => "you cannot hear your partner until you connect one",
        }
    }
}

/// What the engine should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceAction {
    /// Open this device (`None`: the system default) and use it instead of the current one;
    /// report the outcome with [`DevicePolicy::opened`] or [`DevicePolicy::open_failed`].
    Open {
        /// Which kind.
        kind: DeviceKind,
        /// The device; `None` for the system default.
        device: Option<DeviceInfo>,
    },
    /// Go on without a device of this kind.
    Close(DeviceKind),
    /// Tell the user.
    Notice(String),
}

/// What a kind is using.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Using {
    /// Nothing (none found, or not in a call).
    #[default]
    Nothing,
    /// This device (id), or the system default (`None`), being opened or open.
    Device(Option<String>),
}

/// The device decisions for one engine.
#[derive(Debug, Clone, Default)]
pub struct DevicePolicy {
    lists: Devices,
    wanted: [Option<String>; 3],
    using: [Using; 3],
    /// Failed devices, not retried until the lists change.
    failed: [Vec<String>; 3],
    /// In a call: devices are open and follow the lists.
    active: [bool; 3],
}

impl DevicePolicy {
    /// A policy knowing no devices yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The devices last seen.
    #[must_use]
    pub fn lists(&self) -> &Devices {
        &self.lists
    }

    /// The id of the device of `kind` in use, if a listed one is.
    #[must_use]
    pub fn in_use(&self, kind: DeviceKind) -> Option<&str> {
        match &self.using[kind.index()] {
            Using::Device(Some(id)) => Some(id),
            _ => None,
        }
    }

    /// The device of `kind` a call would open now (the user's choice if listed, else the
    /// default); `None` for the system default.
    #[must_use]
    pub fn preferred(&self, kind: DeviceKind) -> Option<DeviceInfo> {
        self.candidate(kind, None)
    }

    /// The user chose `wanted` (`None`: the default). With `kind` active, opens it if that
    /// changes what is used.
    pub fn choose(&mut self, kind: DeviceKind, wanted: Option<String>) -> Vec<DeviceAction> {
        self.wanted[kind.index()] = wanted;
        if !self.active[kind.index()] {
            return Vec::new();
        }
        let candidate = self.candidate(kind, None);
        let target = Using::Device(candidate.as_ref().map(|d| d.id.clone()));
        if target == self.using[kind.index()] {
            return Vec::new();
        }
        self.open(kind, candidate)
    }

    /// A call starts: open a device of `kind` (what the user chose, or the default).
    pub fn activate(&mut self, kind: DeviceKind) -> Vec<DeviceAction> {
        self.active[kind.index()] = true;
        let candidate = self.candidate(kind, None);
        self.open(kind, candidate)
    }

    /// The call ended: its devices are closed.
    pub fn deactivate(&mut self) {
        self.active = [false; 3];
        self.using = Default::default();
        self.failed = Default::default();
    }

    /// The engine opened what [`DeviceAction::Open`] asked for.
    pub fn opened(&mut self, kind: DeviceKind, device: Option<&DeviceInfo>) {
        self.using[kind.index()] = Using::Device(device.map(|d| d.id.clone()));
    }

    /// Opening `device` (`None`: the default) failed: try another, or go without.
    pub fn open_failed(&mut self, kind: DeviceKind, device: Option<&DeviceInfo>, reason: &str) -> Vec<DeviceAction> {
        self.fail(kind, device.map(|d| d.id.as_str()), reason, "cannot be opened")
    }

    /// The device of `kind` in use (`device` as it was opened) stopped working. A report about
    /// a device no longer in use is ignored.
    pub fn lost(&mut self, kind: DeviceKind, device: Option<&str>, reason: &str) -> Vec<DeviceAction> {
        if !self.active[kind.index()] || self.using[kind.index()] != Using::Device(device.map(str::to_owned)) {
            return Vec::new();
        }
        self.fail(kind, device, reason, "stopped working")
    }

    /// Fresh device lists. Returns whether they changed, and what to do about it.
    pub fn update_lists(&mut self, devices: Devices) -> (bool, Vec<DeviceAction>) {
        if devices == self.lists {
            return (false, Vec::new());
        }
        self.lists = devices;
        self.failed = Default::default();
        let mut actions = Vec::new();
        for kind in DeviceKind::ALL {
            if !self.active[kind.index()] {
                continue;
            }
            let wanted_is_back = self.wanted[kind.index()].as_ref().is_some_and(|wanted| {
                self.using[kind.index()] != Using::Device(Some(wanted.clone()))
                    && kind.list(&self.lists).iter().any(|d| &d.id == wanted)
            });
            let appeared = self.using[kind.index()] == Using::Nothing && !kind.list(&self.lists).is_empty();
            if wanted_is_back || appeared {
                let candidate = self.candidate(kind, None);
                if let Some(device) = &candidate {
                    actions.push(DeviceAction::Notice(format!("Using your {} \"{}\".", kind.noun(), device.name)));
                }
                actions.extend(self.open(kind, candidate));
            }
        }
        (true, actions)
    }

    fn fail(&mut self, kind: DeviceKind, device: Option<&str>, reason: &str, what: &str) -> Vec<DeviceAction> {
        let name = device
            .and_then(|id| kind.list(&self.lists).iter().find(|d| d.id == id))
            .map_or_else(|| format!("Your {}", kind.noun()), |d| format!("Your {} \"{}\"", kind.noun(), d.name));
        self.using[kind.index()] = Using::Nothing;
        let Some(device) = device else {
            // The system default itself failed: nothing more to try until the lists change.
            return vec![
                DeviceAction::Close(kind),
                DeviceAction::Notice(format!("{name} {what} ({reason}): {}.", kind.without())),
            ];
        };
        self.failed[kind.index()].push(device.to_owned());
        match self.candidate(kind, Some(device)) {
            Some(next) => {
                let notice = DeviceAction::Notice(format!("{name} {what} ({reason}): using \"{}\".", next.name));
                let mut actions = vec![notice];
                actions.extend(self.open(kind, Some(next)));
                actions
            }
            // Nothing listed at all (the lists may lag behind): the system default may still work.
            None if kind.list(&self.lists).is_empty() => {
                let mut actions = vec![DeviceAction::Notice(format!("{name} {what} ({reason}): using the default."))];
                actions.extend(self.open(kind, None));
                actions
            }
            None => vec![
                DeviceAction::Close(kind),
                DeviceAction::Notice(format!("{name} {what} ({reason}): {}.", kind.without())),
            ],
        }
    }

    /// The device to use: the user's choice, else the default, else the first listed, skipping
    /// failed ones and `except`; `None` (the system default) when nothing is listed.
    fn candidate(&self, kind: DeviceKind, except: Option<&str>) -> Option<DeviceInfo> {
        let failed = &self.failed[kind.index()];
        let usable: Vec<&DeviceInfo> = kind
            .list(&self.lists)
            .iter()
            .filter(|d| Some(d.id.as_str()) != except && !failed.contains(&d.id))
            .collect();
        let wanted = self.wanted[kind.index()].as_deref();
        usable
            .iter()
            .find(|d| Some(d.id.as_str()) == wanted)
            .or_else(|| usable.iter().find(|d| d.is_default))
            .or_else(|| usable.first())
            .map(|d| (*d).clone())
    }

    fn open(&mut self, kind: DeviceKind, device: Option<DeviceInfo>) -> Vec<DeviceAction> {
        self.using[kind.index()] = Using::Device(device.as_ref().map(|d| d.id.clone()));
        vec![DeviceAction::Open { kind, device }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, is_default: bool) -> DeviceInfo {
        DeviceInfo { id: id.into(), name: format!("{id} name"), is_default }
    }

    fn mics(ids: &[(&str, bool)]) -> Devices {
        Devices { microphones: ids.iter().map(|(id, d)| info(id, *d)).collect(), ..Devices::default() }
    }

    fn opens(actions: &[DeviceAction]) -> Vec<Option<String>> {
        actions
            .iter()
            .filter_map(|a| match a {
                DeviceAction::Open { device, .. } => Some(device.as_ref().map(|d| d.id.clone())),
                _ => None,
            })
            .collect()
    }

    fn notices(actions: &[DeviceAction]) -> Vec<&str> {
        actions
            .iter()
            .filter_map(|a| match a {
                DeviceAction::Notice(text) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    const MIC: DeviceKind = DeviceKind::Microphone;

    #[test]
    fn a_call_opens_the_users_choice_else_the_default() {
        let mut policy = DevicePolicy::new();
        policy.update_lists(mics(&[("a", false), ("b", true)]));
        assert_eq!(opens(&policy.activate(MIC)), [Some("b".to_owned())], "the default");
        policy.deactivate();
        policy.choose(MIC, Some("a".into()));
        assert_eq!(opens(&policy.activate(MIC)), [Some("a".to_owned())]);
        policy.deactivate();
        policy.choose(MIC, Some("gone".into()));
        assert_eq!(opens(&policy.activate(MIC)), [Some("b".to_owned())], "a missing choice falls back");
    }

    #[test]
    fn nothing_listed_tries_the_system_default() {
        let mut policy = DevicePolicy::new();
        assert_eq!(opens(&policy.activate(MIC)), [None]);
        let actions = policy.open_failed(MIC, None, "no default input device");
        assert!(actions.contains(&DeviceAction::Close(MIC)));
        assert!(notices(&actions)[0].contains("cannot hear you"), "{actions:?}");
    }

    #[test]
    fn choosing_another_device_mid_call_switches_once() {
        let mut policy = DevicePolicy::new();
        policy.update_lists(mics(&[("a", true), ("b", false)]));
        policy.activate(MIC);
        policy.opened(MIC, Some(&info("a", true)));
        assert_eq!(opens(&policy.choose(MIC, Some("b".into()))), [Some("b".to_owned())]);
        assert!(policy.choose(MIC, Some("b".into())).is_empty(), "already in use");
        assert!(DevicePolicy::new().choose(MIC, Some("b".into())).is_empty(), "not in a call: nothing to open");
    }

    #[test]
    fn an_unplugged_device_falls_back_to_the_default_and_comes_back_when_plugged_in() {
        let mut policy = DevicePolicy::new();
        policy.update_lists(mics(&[("usb", false), ("builtin", true)]));
        policy.choose(MIC, Some("usb".into()));
        policy.activate(MIC);
        policy.opened(MIC, Some(&info("usb", false)));
        let actions = policy.lost(MIC, Some("usb"), "device not available");
        assert_eq!(opens(&actions), [Some("builtin".to_owned())]);
        assert!(notices(&actions)[0].contains("\"usb name\" stopped working"), "{actions:?}");
        policy.opened(MIC, Some(&info("builtin", true)));
        // The list drops the USB microphone: nothing to do.
        let (changed, actions) = policy.update_lists(mics(&[("builtin", true)]));
        assert!(changed && actions.is_empty(), "{actions:?}");
        // It is plugged in again: the user's choice is used again.
        let (_, actions) = policy.update_lists(mics(&[("usb", false), ("builtin", true)]));
        assert_eq!(opens(&actions), [Some("usb".to_owned())]);
        let (changed, _) = policy.update_lists(mics(&[("usb", false), ("builtin", true)]));
        assert!(!changed);
    }

    #[test]
    fn the_last_device_gone_means_going_without_until_one_appears() {
        let mut policy = DevicePolicy::new();
        policy.update_lists(mics(&[("only", true)]));
        policy.activate(MIC);
        policy.opened(MIC, Some(&info("only", true)));
        let actions = policy.lost(MIC, Some("only"), "unplugged");
        assert_eq!(actions[0], DeviceAction::Close(MIC));
        assert!(notices(&actions)[0].contains("cannot hear you until you connect one"));
        assert_eq!(policy.in_use(MIC), None);
        let (_, actions) = policy.update_lists(mics(&[]));
        assert!(actions.is_empty());
        let (_, actions) = policy.update_lists(mics(&[("new", true)]));
        assert_eq!(opens(&actions), [Some("new".to_owned())]);
    }

    #[test]
    fn a_failed_device_is_not_retried_until_the_lists_change() {
        let mut policy = DevicePolicy::new();
        policy.update_lists(mics(&[("a", true), ("b", false)]));
        policy.activate(MIC);
        let actions = policy.open_failed(MIC, Some(&info("a", true)), "busy");
        assert_eq!(opens(&actions), [Some("b".to_owned())]);
        let actions = policy.open_failed(MIC, Some(&info("b", false)), "busy");
        assert_eq!(actions[0], DeviceAction::Close(MIC), "both failed: {actions:?}");
    }

    #[test]
    fn a_device_lost_before_any_list_tries_the_system_default_once() {
        let mut policy = DevicePolicy::new();
        policy.activate(MIC);
        policy.opened(MIC, Some(&info("hw:1", false)));
        let actions = policy.lost(MIC, Some("hw:1"), "unplugged");
        assert_eq!(opens(&actions), [None]);
        let actions = policy.open_failed(MIC, None, "no default input device");
        assert_eq!(actions[0], DeviceAction::Close(MIC));
    }

    #[test]
    fn a_report_about_a_device_no_longer_used_is_ignored() {
        let mut policy = DevicePolicy::new();
        policy.update_lists(mics(&[("a", true), ("b", false)]));
        policy.activate(MIC);
        policy.opened(MIC, Some(&info("a", true)));
        policy.choose(MIC, Some("b".into()));
        policy.opened(MIC, Some(&info("b", false)));
        assert!(policy.lost(MIC, Some("a"), "closed late").is_empty());
        policy.deactivate();
        assert!(policy.lost(MIC, Some("b"), "after the call").is_empty());
    }

    #[test]
    fn each_kind_says_what_the_call_does_without_it() {
        for (kind, words) in
            [(DeviceKind::Camera, "sees no video from you"), (DeviceKind::Speaker, "cannot hear your partner")]
        {
            let mut policy = DevicePolicy::new();
            policy.activate(kind);
            let actions = policy.open_failed(kind, None, "none");
            assert!(notices(&actions)[0].contains(words), "{actions:?}");
        }
    }
}
