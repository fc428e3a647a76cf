//! The module front: the GOPROXY protocol (`/<module>/@v/list`, `.info`, `.mod`, `.zip`,
//! `/@latest`) answered from the same stored git objects as the git front, with the hashes
//! the go command computes in direct mode.
//!
//! Layers, inside out: [`semver`] and [`module`] (the version and path rules of
//! golang.org/x/mod), [`gomodfile`] (what is read from a go.mod), [`modzip`] (which files a
//! module zip holds, its h1 hash, the zip writer), [`attributes`] (the byte conversions
//! `git archive` applies), [`coderepo`] (the go command's rules for one module in one
//! repository, over the [`coderepo::Git`] trait), [`source`] (that trait over a stored
//! repository) and [`front`] (the HTTP requests).

pub mod attributes;
pub mod coderepo;
pub mod front;
pub mod gomodfile;
pub mod ledger;
pub mod module;
pub mod modzip;
pub mod semver;
pub mod source;
pub mod sumdb;

/// One GOPROXY request, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `@v/list`.
    List,
    /// `@v/<version or query>.info`.
    Info(String),
    /// `@v/<version>.mod`.
    Mod(String),
    /// `@v/<version>.zip`.
    Zip(String),
    /// `@latest`.
    Latest,
}

/// Whether a (percent-decoded) request path is a GOPROXY request: `Some((module, request))`,
/// or `Some(Err(reason))` for a malformed one (a 400), `None` for anything else.
pub fn parse_request(path: &str) -> Option<Result<(String, Request), String>> {
    let path = path.trim_start_matches('/');
    let (escaped, req) = if let Some(m) = path.strip_suffix("/@latest") {
        (m, Ok(Request::Latest))
    } else if let Some((m, rest)) = path.split_once("/@v/") {
        let req = if rest == "list" {
            Ok(Request::List)
        } else if let Some(v) = rest.strip_suffix(".info") {
            module::unescape_version(v).map(Request::Info)
        } else if let Some(v) = rest.strip_suffix(".mod") {
            module::unescape_version(v).map(Request::Mod)
        } else if let Some(v) = rest.strip_suffix(".zip") {
            module::unescape_version(v).map(Request::Zip)
        } else {
            Err(format!("unknown module proxy request @v/{rest}"))
        };
        (m, req)
    } else {
        return None;
    };
    let module = match module::unescape_path(escaped) {
        Ok(m) => m,
        Err(e) => return Some(Err(format!("invalid module path: {e}"))),
    };
    Some(
        req.map(|r| (module, r))
            .map_err(|e| format!("invalid version: {e}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_decode_paths_and_versions() {
        assert_eq!(
            parse_request("/github.com/!burnt!sushi/toml/@v/list"),
            Some(Ok(("github.com/BurntSushi/toml".into(), Request::List)))
        );
        assert_eq!(
            parse_request("example.com/m/@v/v1.0.0-!r!c1.info"),
            Some(Ok((
                "example.com/m".into(),
                Request::Info("v1.0.0-RC1".into())
            )))
        );
        assert_eq!(
            parse_request("example.com/m/@v/v2.0.0+incompatible.zip"),
            Some(Ok((
                "example.com/m".into(),
                Request::Zip("v2.0.0+incompatible".into())
            )))
        );
        assert_eq!(
            parse_request("example.com/m/@latest"),
            Some(Ok(("example.com/m".into(), Request::Latest)))
        );
        assert_eq!(parse_request("example.com/m/info/refs"), None);
        assert!(matches!(
            parse_request("Example.com/m/@v/list"),
            Some(Err(_))
        ));
        assert!(matches!(
            parse_request("example.com/m/@v/v1.0.0/../x.info"),
            Some(Err(_))
        ));
        assert!(matches!(
            parse_request("example.com/m/@v/v1!.info"),
            Some(Err(_))
        ));
        assert!(matches!(parse_request("../x/@v/list"), Some(Err(_))));
        assert!(matches!(
            parse_request("example.com/m/@v/v1.0.0.tar"),
            Some(Err(_))
        ));
    }
}
