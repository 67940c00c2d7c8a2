//! The exact shapes of the server's lines the checks read: the welcome, `/who` and `/rooms`
//! (with their cap of 100 and the ` and N more` tail), checked strictly, since a parser that
//! accepts a near miss lets a stage pass that breaks the specification.

use crate::client::LIST_CAP;

/// Whether `name` is a legal nick or room name: 1 to 24 ASCII letters, digits, `_`, `-`.
pub fn is_name(name: &str) -> bool {
    (1..=24).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What follows the nick in the welcome line.
pub const WELCOME_HINT: &str = " (type /help for commands)";

/// `* welcome guestN (type /help for commands)` -> `guestN`. Nothing else is a welcome.
pub fn parse_welcome(line: &str) -> Result<String, String> {
    let bad = || format!("expected `* welcome guestN (type /help for commands)`, got {line:?}");
    let nick = line
        .strip_prefix("* welcome ")
        .and_then(|rest| rest.strip_suffix(WELCOME_HINT))
        .ok_or_else(bad)?;
    let digits = nick.strip_prefix("guest").unwrap_or_default();
    if !is_name(nick) || !is_number(digits) {
        return Err(bad());
    }
    Ok(nick.to_string())
}

/// A decimal number as the server writes one: digits, no sign, no leading zero.
fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
}

/// Splits the list of a `/who` or `/rooms` reply into its entries and the `N` of its
/// ` and N more` tail (0 without one). Exactly the specification's format: entries separated
/// by `, `, at most [`LIST_CAP`] of them, and a tail only after exactly [`LIST_CAP`] entries,
/// joined without a comma, with N at least 1.
fn split_list(list: &str) -> Result<(Vec<&str>, usize), String> {
    let (items, more) = match list.rsplit_once(" and ") {
        Some((items, tail)) => {
            let n = tail
                .strip_suffix(" more")
                .filter(|n| is_number(n))
                .ok_or_else(|| format!("a tail that is not ` and N more`: {tail:?}"))?;
            let n: usize = n.parse().map_err(|e| format!("{n:?}: {e}"))?;
            if n == 0 {
                return Err("` and 0 more`: a tail only when entries were left out".into());
            }
            if items.ends_with(',') {
                return Err("a comma before ` and N more` (the specification has none)".into());
            }
            (items, n)
        }
        None => (list, 0),
    };
    let items: Vec<&str> = items.split(", ").collect();
    if items.iter().any(|i| i.is_empty()) {
        return Err("an empty entry (separators are exactly `, `)".into());
    }
    if items.len() > LIST_CAP {
        return Err(format!(
            "{} entries: at most {LIST_CAP}, then ` and N more`",
            items.len()
        ));
    }
    if more > 0 && items.len() != LIST_CAP {
        return Err(format!(
            "` and {more} more` after {} entries: the tail comes after exactly {LIST_CAP}",
            items.len()
        ));
    }
    Ok((items, more))
}

/// `* members of ROOM: a, b, c` -> (`ROOM`, [a, b, c]), and the `N` of ` and N more`.
///
/// The names must be nicks, sorted case-insensitively (compared as ASCII-lowercased bytes),
/// each once; entries separated by exactly `, `, at most [`LIST_CAP`], and a ` and N more`
/// tail only after exactly [`LIST_CAP`].
pub fn parse_who_list(line: &str) -> Result<(String, Vec<String>, usize), String> {
    let bad = |why: &str| format!("expected `* members of ROOM: a, b, c`, got {line:?}: {why}");
    let rest = line
        .strip_prefix("* members of ")
        .ok_or_else(|| bad("no `* members of `"))?;
    let (room, list) = rest.split_once(": ").ok_or_else(|| bad("no `: `"))?;
    if !is_name(room) {
        return Err(bad("not a room name"));
    }
    let (names, more) = split_list(list).map_err(|e| bad(&e))?;
    if let Some(n) = names.iter().find(|n| !is_name(n)) {
        return Err(bad(&format!("{n:?} is not a nick")));
    }
    for pair in names.windows(2) {
        if pair[0].to_ascii_lowercase() >= pair[1].to_ascii_lowercase() {
            return Err(bad(&format!(
                "{:?} before {:?}: nicks are listed sorted case-insensitively, each once",
                pair[0], pair[1]
            )));
        }
    }
    Ok((
        room.to_string(),
        names.into_iter().map(String::from).collect(),
        more,
    ))
}

/// `* members of ROOM: a, b, c` -> (`ROOM`, [a, b, c]) (see [`parse_who_list`]; a tail's
/// N is not returned: [`who_more`]).
pub fn parse_who(line: &str) -> Result<(String, Vec<String>), String> {
    parse_who_list(line).map(|(room, names, _)| (room, names))
}

/// The `N` of a well-formed `/who` reply that ends in ` and N more`; `None` if it has no
/// tail or is not a well-formed reply.
pub fn who_more(line: &str) -> Option<usize> {
    parse_who_list(line)
        .ok()
        .map(|(_, _, more)| more)
        .filter(|&n| n > 0)
}

/// `* rooms: lobby (3), rust (2)` -> [(lobby, 3), (rust, 2)], and the `N` of ` and N more`.
///
/// Each entry is `NAME (COUNT)`, COUNT at least 1; entries sorted by name byte by byte,
/// each once; entries separated by exactly `, `, at most [`LIST_CAP`], and a ` and N more`
/// tail only after exactly [`LIST_CAP`].
pub fn parse_rooms_list(line: &str) -> Result<(Vec<(String, usize)>, usize), String> {
    let bad = |why: &str| format!("expected `* rooms: ROOM (N), ...`, got {line:?}: {why}");
    let list = line
        .strip_prefix("* rooms: ")
        .ok_or_else(|| bad("no `* rooms: `"))?;
    let (items, more) = split_list(list).map_err(|e| bad(&e))?;
    let mut rooms = Vec::with_capacity(items.len());
    for item in items {
        let entry = item
            .strip_suffix(')')
            .and_then(|i| i.split_once(" ("))
            .filter(|(room, count)| is_name(room) && is_number(count) && *count != "0");
        let Some((room, count)) = entry else {
            return Err(bad(&format!("{item:?} is not `ROOM (COUNT)`")));
        };
        let count: usize = count.parse().map_err(|e| bad(&format!("{count}: {e}")))?;
        rooms.push((room.to_string(), count));
    }
    for pair in rooms.windows(2) {
        if pair[0].0.as_bytes() >= pair[1].0.as_bytes() {
            return Err(bad(&format!(
                "{:?} before {:?}: rooms are listed sorted by name, byte by byte, each once",
                pair[0].0, pair[1].0
            )));
        }
    }
    Ok((rooms, more))
}

/// `* rooms: lobby (3), rust (2)` -> [(lobby, 3), (rust, 2)] (see [`parse_rooms_list`]).
pub fn parse_rooms(line: &str) -> Result<Vec<(String, usize)>, String> {
    parse_rooms_list(line).map(|(rooms, _)| rooms)
}

/// The `N` of a well-formed `/rooms` reply that ends in ` and N more`.
pub fn rooms_more(line: &str) -> Option<usize> {
    parse_rooms_list(line)
        .ok()
        .map(|(_, more)| more)
        .filter(|&n| n > 0)
}

/// The `/who` reply the specification prescribes for `room` with these members: sorted
/// case-insensitively, the first [`LIST_CAP`] listed, then ` and N more`.
pub fn who_line(room: &str, members: &[&str]) -> String {
    let mut sorted: Vec<&str> = members.to_vec();
    sorted.sort_by_key(|n| n.to_ascii_lowercase());
    format!("* members of {room}: {}", capped(&sorted))
}

/// The `/rooms` reply the specification prescribes for these rooms and counts: sorted by
/// name byte by byte, the first [`LIST_CAP`] listed, then ` and N more`.
pub fn rooms_line(rooms: &[(&str, usize)]) -> String {
    let mut sorted: Vec<(&str, usize)> = rooms.to_vec();
    sorted.sort();
    let items: Vec<String> = sorted.iter().map(|(r, n)| format!("{r} ({n})")).collect();
    let items: Vec<&str> = items.iter().map(String::as_str).collect();
    format!("* rooms: {}", capped(&items))
}

/// `a, b, c`, cut at [`LIST_CAP`] with ` and N more`.
fn capped(items: &[&str]) -> String {
    let mut text = items
        .iter()
        .take(LIST_CAP)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > LIST_CAP {
        text.push_str(&format!(" and {} more", items.len() - LIST_CAP));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const HINT: &str = " (type /help for commands)";

    #[test]
    fn welcome_lines() {
        assert_eq!(
            parse_welcome(&format!("* welcome guest1{HINT}")).unwrap(),
            "guest1"
        );
        assert_eq!(
            parse_welcome(&format!("* welcome guest12{HINT}")).unwrap(),
            "guest12"
        );
        for bad in [
            "* welcome guest1".to_string(),
            "* welcome guest12 (type /help)".to_string(),
            format!("* welcome alice{HINT}"),
            format!("* welcome guest{HINT}"),
            format!("* welcome guest01{HINT}"),
            format!("* welcome guestx1{HINT}"),
            format!("welcome guest1{HINT}"),
            format!("* welcome  guest1{HINT}"),
            format!("* Welcome guest1{HINT}"),
            format!("* welcome guest1{HINT} "),
        ] {
            assert!(parse_welcome(&bad).is_err(), "{bad}");
        }
    }

    /// `n` nicks `n000`, `n001`, ... (sorted).
    fn nicks(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("n{i:03}")).collect()
    }

    #[test]
    fn who_lines() {
        assert_eq!(
            parse_who("* members of lobby: a, b_c, d-1").unwrap(),
            ("lobby".into(), vec!["a".into(), "b_c".into(), "d-1".into()])
        );
        // Case-insensitive order: `Bob` between `alice` and `carol`.
        assert!(parse_who("* members of x: alice, Bob, carol").is_ok());
        assert!(parse_who("* members of x: Bob, alice").is_err());
        assert!(parse_who("* members of x: a, a").is_err(), "twice");
        assert!(
            parse_who("* members of x: a, A").is_err(),
            "twice in any case"
        );
        let hundred = nicks(100).join(", ");
        let (room, names, more) =
            parse_who_list(&format!("* members of x: {hundred} and 7 more")).unwrap();
        assert_eq!((room.as_str(), names.len(), more), ("x", 100, 7));
        assert_eq!(
            who_more(&format!("* members of x: {hundred} and 200 more")),
            Some(200)
        );
        assert_eq!(who_more(&format!("* members of x: {hundred}")), None);
        for bad in [
            // The tail only after exactly 100 names, without a comma, N >= 1, no zero pad.
            "* members of x: a, b and 7 more".to_string(),
            format!("* members of x: {hundred}, and 7 more"),
            format!("* members of x: {hundred} and 0 more"),
            format!("* members of x: {hundred} and 07 more"),
            format!("* members of x: {hundred} and seven more"),
            format!("* members of x: {}", nicks(101).join(", ")),
            "* members of x: a,b".to_string(),
            "* members of x: a,  b".to_string(),
            "* members of x: a, ".to_string(),
            "* members of x: ".to_string(),
            "* members of lobby a".to_string(),
            "* members of lobby: <a>".to_string(),
            "* members of lobby:  a".to_string(),
            "* rooms: lobby (1)".to_string(),
        ] {
            assert!(parse_who(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rooms_lines() {
        assert_eq!(
            parse_rooms("* rooms: lobby (3), rust (2)").unwrap(),
            vec![("lobby".to_string(), 3), ("rust".to_string(), 2)]
        );
        // Byte order: uppercase before lowercase.
        assert!(parse_rooms("* rooms: Rust (1), lobby (2), rust (1)").is_ok());
        let rooms: Vec<String> = nicks(100).iter().map(|r| format!("{r} (1)")).collect();
        let line = format!("* rooms: {} and 1 more", rooms.join(", "));
        assert_eq!(rooms_more(&line), Some(1));
        assert_eq!(parse_rooms(&line).unwrap().len(), 100);
        for bad in [
            "* rooms: lobby 3",
            "* rooms: lobby (x)",
            "* rooms: lobby (0)",
            "* rooms: lobby (03)",
            "* rooms: lobby(3)",
            "* rooms: rust (1), lobby (1)",
            "* rooms: lobby (1), Rust (1)",
            "* rooms: lobby (1), lobby (1)",
            "* rooms: lobby (1) and 1 more",
            "* rooms: ",
        ] {
            assert!(parse_rooms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lines_the_specification_prescribes() {
        assert_eq!(
            who_line("x", &["carol", "Bob", "alice"]),
            "* members of x: alice, Bob, carol"
        );
        let many = nicks(101);
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let line = who_line("x", &refs);
        assert!(line.ends_with("n099 and 1 more"), "{line}");
        assert_eq!(who_more(&line), Some(1));
        assert_eq!(
            rooms_line(&[("rust", 2), ("Rust", 1), ("lobby", 3)]),
            "* rooms: Rust (1), lobby (3), rust (2)"
        );
    }

    #[test]
    fn names() {
        assert!(is_name("a") && is_name("A_b-9") && is_name(&"x".repeat(24)));
        assert!(!is_name("") && !is_name(&"x".repeat(25)) && !is_name("a b") && !is_name("é"));
    }
}
