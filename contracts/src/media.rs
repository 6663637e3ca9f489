//! Media types the services and the host agree on.

/// Whether `content_type` is JSON: `application/json` or an `application/*+json` type (RFC 6839,
/// such as `application/problem+json`), in any case, with or without parameters such as
/// `charset=utf-8`.
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    // Bytes, not characters: the text may come from a guest, and need not be ASCII.
    let subtype = subtype.as_bytes();
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case(b"json")
            || subtype.len() > 5 && subtype[subtype.len() - 5..].eq_ignore_ascii_case(b"+json"))
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_and_json_suffixed_types_are_json_in_any_case_and_with_parameters() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/problem+json"));
        assert!(is_json("application/cloudevents+json"));
    }

    #[test]
    fn other_types_and_near_misses_are_not_json() {
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/jsonx"));
        assert!(!is_json("text/json"));
        assert!(!is_json("application/+json"));
        assert!(!is_json(""));
    }

    #[test]
    fn text_that_is_not_ascii_is_read_without_panicking() {
        assert!(!is_json("application/jsoné"));
        assert!(!is_json("applicatioñ/json"));
        assert!(!is_json("application/ééééé"));
    }
}
