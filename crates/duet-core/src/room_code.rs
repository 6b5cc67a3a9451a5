//! Room codes nobody can guess: 12 characters from a 30-symbol alphabet without look-alikes
//! (about 59 bits), in groups of four for reading out, e.g. `k7mq-4tzx-b2wh`.

use rand::Rng;

/// Digits and lowercase letters without the look-alikes `0 o 1 l i u`.
const ALPHABET: &[u8; 30] = b"23456789abcdefghjkmnpqrstvwxyz";

/// A fresh random room code (valid for `join_room`).
pub fn new_room_code() -> String {
    let mut rng = rand::rng();
    let mut code = String::with_capacity(14);
    for i in 0..12 {
        if i > 0 && i % 4 == 0 {
            code.push('-');
        }
        code.push(char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]));
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_valid_readable_and_different() {
        let codes: std::collections::HashSet<String> = (0..1000).map(|_| new_room_code()).collect();
        assert_eq!(codes.len(), 1000);
        for code in &codes {
            assert!(duet_proto::valid_room_code(code), "{code}");
            assert_eq!(code.len(), 14);
            assert!(!code.contains(['0', 'o', '1', 'l', 'i', 'u']), "{code}");
        }
    }
}
