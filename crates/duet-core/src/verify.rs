//! "Verify your partner": a short authentication string both sides derive from the two DTLS
//! certificate fingerprints of their connection, to compare by voice or on screen.
//!
//! Media is encrypted end to end with keys from a DTLS handshake whose certificates are
//! pinned by the fingerprints in the signalled SDP. Someone in the middle (the signaling
//! server included) has to put their own fingerprints into both descriptions, and then the
//! two sides compute different strings. Six emoji carry 36 bits: a middleman who picks their
//! certificate for the second side after seeing both real fingerprints would need about
//! 2^36 certificate generations while the call is being set up.
//!
//! Derivation (`v1`, also implemented by the browser client): the two fingerprints, each
//! written as `<algorithm lowercase> <HEX:HEX:...>` (uppercase hex), sorted, joined as
//! `duet-sas-v1\n<first>\n<second>`; SHA-256 of that; its first 36 bits, six bits at a time
//! from the most significant, index [`EMOJI`].

use sha2::{Digest, Sha256};

/// The 64 symbols of the string: (emoji, name).
pub const EMOJI: [(&str, &str); 64] = [
    ("🐶", "dog"),
    ("🐱", "cat"),
    ("🦁", "lion"),
    ("🐴", "horse"),
    ("🦄", "unicorn"),
    ("🐷", "pig"),
    ("🐘", "elephant"),
    ("🐰", "rabbit"),
    ("🐼", "panda"),
    ("🐓", "rooster"),
    ("🐧", "penguin"),
    ("🐢", "turtle"),
    ("🐟", "fish"),
    ("🐙", "octopus"),
    ("🦋", "butterfly"),
    ("🌷", "tulip"),
    ("🌳", "tree"),
    ("🌵", "cactus"),
    ("🍄", "mushroom"),
    ("🌍", "globe"),
    ("🌙", "moon"),
    ("☁️", "cloud"),
    ("🔥", "fire"),
    ("🍌", "banana"),
    ("🍎", "apple"),
    ("🍓", "strawberry"),
    ("🌽", "corn"),
    ("🍕", "pizza"),
    ("🎂", "cake"),
    ("❤️", "heart"),
    ("😀", "smiley"),
    ("🤖", "robot"),
    ("🎩", "hat"),
    ("👓", "glasses"),
    ("🔧", "spanner"),
    ("🎅", "santa"),
    ("👍", "thumbs up"),
    ("☂️", "umbrella"),
    ("⌛", "hourglass"),
    ("⏰", "clock"),
    ("🎁", "gift"),
    ("💡", "light bulb"),
    ("📕", "book"),
    ("✏️", "pencil"),
    ("📎", "paperclip"),
    ("✂️", "scissors"),
    ("🔒", "lock"),
    ("🔑", "key"),
    ("🔨", "hammer"),
    ("☎️", "telephone"),
    ("🏁", "flag"),
    ("🚂", "train"),
    ("🚲", "bicycle"),
    ("✈️", "aeroplane"),
    ("🚀", "rocket"),
    ("🏆", "trophy"),
    ("⚽", "ball"),
    ("🎸", "guitar"),
    ("🎺", "trumpet"),
    ("🔔", "bell"),
    ("⚓", "anchor"),
    ("🎧", "headphones"),
    ("📁", "folder"),
    ("📌", "pin"),
];

/// How many symbols the string has.
pub const SAS_LEN: usize = 6;

/// The string both sides show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortAuthString {
    /// Indexes into [`EMOJI`].
    pub symbols: [u8; SAS_LEN],
}

impl ShortAuthString {
    /// Derives the string from our fingerprint and the partner's (either order gives the same).
    pub fn derive(local: &Fingerprint, remote: &Fingerprint) -> Self {
        let (a, b) = (local.canonical(), remote.canonical());
        let (first, second) = if a <= b { (a, b) } else { (b, a) };
        let digest = Sha256::digest(format!("duet-sas-v1\n{first}\n{second}").as_bytes());
        let bits = u64::from_be_bytes([digest[0], digest[1], digest[2], digest[3], digest[4], 0, 0, 0]);
        let mut symbols = [0u8; SAS_LEN];
        for (i, s) in symbols.iter_mut().enumerate() {
            *s = ((bits >> (58 - 6 * i)) & 0x3f) as u8;
        }
        Self { symbols }
    }

    /// The emoji, space separated.
    pub fn emoji(&self) -> String {
        self.symbols.iter().map(|&i| EMOJI[usize::from(i)].0).collect::<Vec<_>>().join(" ")
    }

    /// The names, to read out: "dog, rocket, ...".
    pub fn words(&self) -> String {
        self.symbols.iter().map(|&i| EMOJI[usize::from(i)].1).collect::<Vec<_>>().join(", ")
    }
}

/// A DTLS certificate fingerprint as signalled in SDP (`a=fingerprint:sha-256 AB:CD:...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    algorithm: String,
    value: String,
}

impl Fingerprint {
    /// The fingerprint of a session description: its first `a=fingerprint` line (session or
    /// media level; a bundled call has one certificate).
    pub fn from_sdp(sdp: &str) -> Option<Self> {
        let line = sdp.lines().find_map(|l| l.trim().strip_prefix("a=fingerprint:"))?;
        let (algorithm, value) = line.trim().split_once(' ')?;
        let value = value.trim();
        let hex_pairs = value.split(':').all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
        (!algorithm.is_empty() && !value.is_empty() && hex_pairs)
            .then(|| Self { algorithm: algorithm.to_ascii_lowercase(), value: value.to_ascii_uppercase() })
    }

    fn canonical(&self) -> String {
        format!("{} {}", self.algorithm, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\na=fingerprint:sha-256 0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9:0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9\r\n";
    const B: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=fingerprint:SHA-256 ff:ee:dd:cc:bb:aa:99:88:77:66:55:44:33:22:11:00:ff:ee:dd:cc:bb:aa:99:88:77:66:55:44:33:22:11:00\r\n";

    #[test]
    fn both_sides_derive_the_same_string() {
        let (a, b) = (Fingerprint::from_sdp(A).unwrap(), Fingerprint::from_sdp(B).unwrap());
        assert_eq!(ShortAuthString::derive(&a, &b), ShortAuthString::derive(&b, &a));
    }

    #[test]
    fn a_different_certificate_gives_a_different_string() {
        let (a, b) = (Fingerprint::from_sdp(A).unwrap(), Fingerprint::from_sdp(B).unwrap());
        let middle = Fingerprint::from_sdp(&A.replace("0A:1B", "0A:1C")).unwrap();
        assert_ne!(ShortAuthString::derive(&a, &b), ShortAuthString::derive(&middle, &b));
    }

    #[test]
    fn case_of_algorithm_and_hex_does_not_matter() {
        let b = Fingerprint::from_sdp(B).unwrap();
        let (head, value) = B.split_once("SHA-256 ").unwrap();
        let upper = Fingerprint::from_sdp(&format!("{head}sha-256 {}", value.to_uppercase())).unwrap();
        assert_eq!(b, upper);
    }

    /// The browser client implements the same derivation; this pins it.
    #[test]
    fn the_derivation_is_stable() {
        let (a, b) = (Fingerprint::from_sdp(A).unwrap(), Fingerprint::from_sdp(B).unwrap());
        let sas = ShortAuthString::derive(&a, &b);
        let input = format!(
            "duet-sas-v1\nsha-256 {}\nsha-256 {}",
            &A[A.find("0A:").unwrap()..A.len() - 2],
            "FF:EE:DD:CC:BB:AA:99:88:77:66:55:44:33:22:11:00:FF:EE:DD:CC:BB:AA:99:88:77:66:55:44:33:22:11:00"
        );
        let d = Sha256::digest(input.as_bytes());
        assert_eq!(sas.symbols[0], d[0] >> 2);
        assert_eq!(sas.symbols[1], ((d[0] & 0x03) << 4) | (d[1] >> 4));
        assert_eq!(sas.emoji().split(' ').count(), SAS_LEN);
        assert_eq!(sas.words().split(", ").count(), SAS_LEN);
    }

    #[test]
    fn a_description_without_a_usable_fingerprint_gives_none() {
        assert_eq!(Fingerprint::from_sdp("v=0\r\n"), None);
        assert_eq!(Fingerprint::from_sdp("a=fingerprint:sha-256\r\n"), None);
        assert_eq!(Fingerprint::from_sdp("a=fingerprint:sha-256 zz:11\r\n"), None);
    }

    #[test]
    fn every_symbol_is_distinct() {
        let mut names: Vec<&str> = EMOJI.iter().map(|e| e.1).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 64);
    }

    /// The browser client carries the same symbols in the same order.
    #[test]
    fn the_browser_client_has_the_same_symbols() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../duet-server/web/app.js");
        let js = std::fs::read_to_string(path).unwrap();
        let mut at = js.find("const SAS_SYMBOLS").expect("SAS_SYMBOLS in app.js");
        for (emoji, name) in EMOJI {
            let entry = format!("[\"{emoji}\", \"{name}\"]");
            let found = js[at..].find(&entry).unwrap_or_else(|| panic!("{entry} missing or out of order"));
            at += found + entry.len();
        }
    }
}
