//! The git wire protocol, server side: pkt-lines, request parsing, ref advertisement and the
//! upload-pack negotiation for protocol v0/v1 and v2.
//!
//! # Byte-for-byte with C git
//!
//! Clients other than git's own (libgit2, dulwich, JGit, go-git, gitoxide) parse some lines
//! strictly, so every line goprox sends is written the way C git's upload-pack (2.47) writes
//! it. Checked by `tests/e2e/wire.rs`, which sends the same requests to goprox and to
//! `git http-backend` and compares the responses up to the pack data, with only the `agent=`
//! value masked. Where git's documentation allows a choice, C git's choice is taken:
//!
//! | what | C git sends (and so does goprox) |
//! | --- | --- |
//! | v0 first ref line | `<oid> <ref>\0<caps>\n`; other refs `<oid> <ref>\n`, peeled `<oid> <ref>^{}\n`; HEAD first |
//! | v0 capability order | `multi_ack thin-pack side-band side-band-64k ofs-delta shallow deepen-since deepen-not deepen-relative no-progress include-tag multi_ack_detailed allow-tip-sha1-in-want allow-reachable-sha1-in-want no-done symref=HEAD:<t> filter object-format=sha1 agent=<a>` |
//! | v0 empty repository | `<40 zeros> capabilities^{}\0<caps>\n`, no `symref=` for an unborn HEAD |
//! | v0/v2 `shallow <oid>`, `unshallow <oid>` | **no** trailing LF; all `shallow` lines, then all `unshallow` lines |
//! | v0 after the shallow list | a flush; a stateless request without a have section ends there |
//! | v0 `ACK <oid> common` / `continue` / `ready` | with LF; `ready` names the have that triggered it (an unknown one mid-batch, else the last common one at the flush) |
//! | v0 end of a have batch | `ACK <last common> ready` only if the batch had no unknown have; `NAK` when nothing is common or multi_ack; with no-done and ready, `ACK <last common>` and the pack |
//! | v0 `done` | `ACK <last common>` (multi_ack) or `NAK` (nothing common); plain `ACK <oid>` only once, for the first common have, without multi_ack |
//! | v0 request without wants | nothing at all |
//! | `ERR <msg>` | **no** trailing LF, e.g. `ERR upload-pack: not our ref <oid>`; nothing after it |
//! | v2 capability advertisement | `version 2`, `agent=`, `ls-refs=unborn`, `fetch=shallow wait-for-done filter ref-in-want`, `server-option`, `object-format=sha1`, flush; each with LF |
//! | v2 `ls-refs` | `<oid> <ref>[ symref-target:<t>][ peeled:<oid>]\n`, `unborn HEAD symref-target:<t>\n` only when asked; flush |
//! | v2 `acknowledgments` | only when the request has `have` lines and no `done`; `NAK` if none known, else `ACK <oid>` for each known have once, in request order; `ready` then delim, or flush and stop |
//! | v2 section order | acknowledgments, shallow-info, wanted-refs, packfile: gitprotocol-v2's order, which git's fetch-pack requires. C git 2.47's upload-pack writes wanted-refs first, so `git clone --depth=1` (which sends `want-ref HEAD`) fails against it with `uploadpack.allowRefInWant`; goprox deliberately differs here |
//! | v2 `shallow-info` | sent when the request deepens or names shallow commits, even if empty |
//! | v2 fetch without wants | nothing at all (no flush) |
//! | side-band | pack on band 1, progress on band 2, fatal errors on band 3; 65520-byte packets for side-band-64k and v2, 1000 for side-band; a final flush |
//! | `deepen` with `deepen-since`/`deepen-not` | C git dies without an `ERR` line; goprox sends `ERR upload-pack: deepen and deepen-since (or deepen-not) cannot be used together` (the one deliberate difference) |

pub mod advertise;
pub mod pktline;
pub mod request;
pub mod sideband;
pub mod upload_pack;
