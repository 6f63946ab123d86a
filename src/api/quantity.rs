//! Kubernetes resource quantities (`50Gi`, `200G`, `1.5Ti`, `1e9`) as bytes, and bytes as the
//! quantities Hearth writes (`BuildCache` `status.size`) and the client prints.

/// Bytes in a quantity, or `None` when it is not a valid non-negative quantity.
pub fn to_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then(|| (value * multiplier).round() as u64)
}

/// Bytes for people: `12.3Gi`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["", "Ki", "Mi", "Gi", "Ti", "Pi"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_suffixes_users_write() {
        assert_eq!(to_bytes("50Gi"), Some(50 * 1024 * 1024 * 1024));
        assert_eq!(to_bytes("200G"), Some(200_000_000_000));
        assert_eq!(to_bytes("1.5Ki"), Some(1536));
        assert_eq!(to_bytes("1e9"), Some(1_000_000_000));
        assert_eq!(to_bytes("42"), Some(42));
        assert_eq!(to_bytes("-1Gi"), None);
        assert_eq!(to_bytes("12 parsecs"), None);
        assert_eq!(to_bytes("5Xi"), None);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0");
        assert_eq!(human(1536), "1.5Ki");
        assert_eq!(human(13_207_024_435), "12.3Gi");
    }
}
