//! upload-pack: negotiation (v0/v1 multi_ack_detailed over stateless HTTP, and v2 `fetch`),
//! shallow/deepen handling, and streaming the pack. [`respond`] takes a request and gives the
//! response body: the work runs on a blocking thread, a whole-pack answer streams from async
//! code.

use super::pktline::{err_line, write_delim, write_flush, write_line, write_unterminated};
use super::request::FetchRequest;
use super::sideband::Sideband;
use crate::metrics;
use crate::odb::bitmap::ClientClosure;
use crate::odb::walk::{Deepen, Filter, PackPlan, ShallowOutcome, Walker};
use crate::odb::{OdbError, pack_cache, writer};
use crate::snapshot::Repo;
use gix_hash::ObjectId;
use std::collections::HashSet;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::Instant;

/// Response chunks (of up to 256 KiB) queued between a pack's writer and the client's
/// connection.
const RESPONSE_CHUNKS: usize = 4;

/// A response body: its chunks as they are made (an error ends it early).
pub type ResponseBody = tokio::sync::mpsc::Receiver<Result<bytes::Bytes, io::Error>>;

/// Answer one upload-pack request from `repo`. Negotiation and pack generation run on a
/// blocking thread, one of `turns` at a time (later requests queue); a clone answered with the
/// stored packs whole is then streamed from async code (waiting for the store and for the
/// client holds no thread). The caller's span (its request id) goes along.
pub fn respond(
    repo: Arc<Repo>,
    req: FetchRequest,
    version: Version,
    turns: Arc<tokio::sync::Semaphore>,
) -> ResponseBody {
    let (tx, rx) = tokio::sync::mpsc::channel(RESPONSE_CHUNKS);
    let span = tracing::Span::current();
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let Ok(turn) = turns.acquire_owned().await else {
                return;
            };
            if tx.is_closed() {
                // The client left while it waited for its turn.
                return;
            }
            let span = tracing::Span::current();
            let generated = tokio::task::spawn_blocking(move || {
                let _span = span.enter();
                let mut w = super::sideband::ChannelWriter::new(tx);
                let r = serve(&repo, &req, version, &mut w);
                (r.and_then(|whole| Ok((whole, w.into_sender()?))), repo)
            })
            .await;
            drop(turn);
            match generated {
                Ok((Ok((Some(whole), tx)), repo)) => stream_whole(&repo, whole, tx).await,
                Ok((Ok((None, _)), _)) => {}
                Ok((Err(e), repo)) => {
                    tracing::info!(repo = %repo.root, error = %e, "upload-pack response aborted");
                }
                Err(e) => tracing::error!(error = %e, "upload-pack task failed"),
            }
        },
        span,
    ));
    rx
}

/// Answer a clone with `head` ([`fill_pack_head`]) and a pack still arriving: `next` yields
/// its bytes as they come (blocking), on a blocking thread ([`pass_through`]).
pub fn respond_pass_through(
    req: FetchRequest,
    version: Version,
    head: Vec<u8>,
    mut next: impl FnMut() -> io::Result<Option<bytes::Bytes>> + Send + 'static,
) -> ResponseBody {
    let (tx, rx) = tokio::sync::mpsc::channel(RESPONSE_CHUNKS);
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _span = span.enter();
        let mut w = super::sideband::ChannelWriter::new(tx);
        if let Err(e) = pass_through(&req, version, &head, &mut next, &mut w) {
            tracing::info!(error = %e, "pass-through response aborted");
        }
    });
    rx
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V0,
    V2,
}

/// An error to report to the client as an `ERR` line.
struct Refuse(String);

impl From<OdbError> for Refuse {
    fn from(e: OdbError) -> Self {
        Refuse(format!("upload-pack: {}", e.public_message()))
    }
}

/// Serve one upload-pack request, writing the response to `out`; or, when the answer is the
/// repository's packs streamed whole, everything before the pack, and what the rest needs
/// ([`stream_whole`], from async code).
fn serve(
    repo: &Repo,
    req: &FetchRequest,
    version: Version,
    out: &mut dyn Write,
) -> io::Result<Option<WholeAnswer>> {
    let started = Instant::now();
    let mut head = Vec::new();
    match negotiate(repo, req, version, &mut head) {
        Ok(None) => out.write_all(&head).map(|()| None),
        Ok(Some((job, walker))) => {
            out.write_all(&head)?;
            let r = send_pack(repo, req, version, job, walker, out);
            metrics::pack_generation(started.elapsed());
            r
        }
        Err(Refuse(msg)) => {
            tracing::info!(repo = %repo.root, error = %msg, "upload-pack refused");
            metrics::REQUEST_ERRORS.inc();
            out.write_all(&head)?;
            out.write_all(&err_line(&msg)).map(|()| None)
        }
    }
}

/// The rest of an answer that streams the repository's packs whole: the framing the client
/// asked for.
#[derive(Debug)]
pub struct WholeAnswer {
    /// Total pkt-line size of the side-band in use; `None`: no side-band.
    max_pkt: Option<usize>,
}

/// Stream the packs of `repo` whole to `tx` (after [`serve`] wrote what comes before): the
/// reads and the writes wait asynchronously, so a slow client holds no thread.
async fn stream_whole(repo: &Repo, answer: WholeAnswer, tx: super::sideband::BodyTx) {
    let mut sb = super::sideband::AsyncSideband::new(tx, answer.max_pkt);
    struct Sink<'s>(&'s mut super::sideband::AsyncSideband);
    impl writer::WholeSink for Sink<'_> {
        async fn write(&mut self, data: &[u8]) -> io::Result<()> {
            self.0.write(data).await
        }
    }
    let started = Instant::now();
    let odb = &repo.odb;
    let r = match writer::stream_whole_packs(odb, &mut Sink(&mut sb)).await {
        Ok(stats) => {
            metrics::PACKS_SERVED.inc();
            metrics::OBJECTS_SERVED.add(stats.objects);
            metrics::PACK_BYTES_SERVED.add(stats.bytes);
            tracing::info!(repo = %repo.root, objects = stats.objects, bytes = stats.bytes,
                packs = odb.packs.len(), ms = started.elapsed().as_millis() as u64, "whole packs sent");
            sb.finish().await
        }
        Err(e) => match failure(repo, "streaming whole packs failed", e) {
            Ok(msg) => sb.error(&msg).await,
            Err(e) => Err(e),
        },
    };
    if let Err(e) = r {
        tracing::info!(repo = %repo.root, error = %e, "upload-pack response aborted");
    }
}

/// The object a `want-ref` names (`HEAD` or a full ref name).
fn want_ref(index: &crate::refs::RefIndex, name: &str) -> Option<ObjectId> {
    if name == "HEAD" {
        index.head()
    } else {
        index.refs.get(name).map(|r| r.oid)
    }
}

/// What the pack must contain, decided by negotiation.
struct PackJob {
    wants: Vec<ObjectId>,
    haves: Vec<ObjectId>,
    shallow: ShallowOutcome,
    filter: Option<Filter>,
}

/// Negotiate; when a pack is due, also hand over the walker (its parsed commits are reused).
fn negotiate<'r>(
    repo: &'r Repo,
    req: &FetchRequest,
    version: Version,
    out: &mut Vec<u8>,
) -> Result<Option<(PackJob, Walker<'r>)>, Refuse> {
    let odb = &repo.odb;
    let mut walker = Walker::new(odb);
    let mut wants = req.wants.clone();
    let mut wanted_refs = Vec::new();
    for name in &req.want_refs {
        let oid =
            want_ref(&repo.index, name).ok_or_else(|| Refuse(format!("unknown ref {name}")))?;
        wants.push(oid);
        wanted_refs.push((oid, name.clone()));
    }
    for w in &wants {
        if !odb.contains(w) {
            return Err(Refuse(format!("upload-pack: not our ref {w}")));
        }
    }
    if wants.is_empty() {
        // C git answers a request without wants with nothing at all, in v0 and v2.
        return Ok(None);
    }
    let filter = match &req.filter {
        None => None,
        Some(spec) => Some(
            Filter::parse(spec).ok_or_else(|| Refuse(format!("unsupported filter {spec:?}")))?,
        ),
    };

    // Haves we know, in the client's order, without repeats: they bound the pack.
    let mut seen = HashSet::new();
    let common: Vec<ObjectId> = req
        .haves
        .iter()
        .filter(|h| odb.contains(h) && seen.insert(**h))
        .copied()
        .collect();

    if req.depth.is_some() && (req.deepen_since.is_some() || !req.deepen_not.is_empty()) {
        // C git's wording (upload-pack.c, send_shallow_list).
        return Err(Refuse(
            "upload-pack: deepen and deepen-since (or deepen-not) cannot be used together".into(),
        ));
    }
    // Shallow boundary.
    let shallow = if req.deepens() {
        let mut want_commits = Vec::new();
        for w in &wants {
            if let Some(c) = walker.peel_commit(w)? {
                want_commits.push(c);
            }
        }
        let mut not = Vec::new();
        for r in &req.deepen_not {
            not.push(
                resolve_rev(repo, r)
                    .ok_or_else(|| Refuse(format!("deepen-not: unknown ref {r}")))?,
            );
        }
        let deepen = Deepen {
            depth: req.depth,
            relative: req.deepen_relative,
            since: req.deepen_since,
            not,
        };
        walker.shallow(&want_commits, &req.shallows, &deepen)?
    } else {
        ShallowOutcome {
            grafts: req
                .shallows
                .iter()
                .filter(|s| odb.contains(s))
                .copied()
                .collect(),
            ..Default::default()
        }
    };
    let job = PackJob {
        wants,
        haves: common,
        shallow,
        filter,
    };
    let mut they = TheyHave::default();

    // Every line below is written exactly as C git's upload-pack writes it (see the table in
    // `protocol/mod.rs`).
    match version {
        Version::V0 => {
            if req.deepens() {
                write_shallow_lines(out, &job.shallow);
                write_flush(out);
            }
            if !req.have_section {
                return Ok(None);
            }
            // One stateless round of C git's get_common_commits.
            let multi_ack = req.multi_ack_detailed || req.multi_ack;
            let (mut got_common, mut got_other, mut sent_ready) = (false, false, false);
            let mut last = None;
            for h in &req.haves {
                if !odb.contains(h) {
                    got_other = true;
                    if multi_ack && they.ok_to_give_up(&mut walker, &job.wants)? {
                        if req.multi_ack_detailed {
                            sent_ready = true;
                            write_line(out, format_args!("ACK {h} ready"));
                        } else {
                            write_line(out, format_args!("ACK {h} continue"));
                        }
                    }
                    continue;
                }
                they.got(&mut walker, h)?;
                got_common = true;
                last = Some(*h);
                if req.multi_ack_detailed {
                    write_line(out, format_args!("ACK {h} common"));
                } else if req.multi_ack {
                    write_line(out, format_args!("ACK {h} continue"));
                } else if they.have_obj == 1 {
                    write_line(out, format_args!("ACK {h}"));
                }
            }
            if req.done {
                match last {
                    _ if they.have_obj == 0 => write_line(out, "NAK"),
                    Some(l) if multi_ack => write_line(out, format_args!("ACK {l}")),
                    _ => {}
                }
                return Ok(Some((job, walker)));
            }
            // The batch ended with a flush.
            if req.multi_ack_detailed
                && got_common
                && !got_other
                && they.ok_to_give_up(&mut walker, &job.wants)?
                && let Some(l) = last
            {
                sent_ready = true;
                write_line(out, format_args!("ACK {l} ready"));
            }
            if they.have_obj == 0 || multi_ack {
                write_line(out, "NAK");
            }
            if let (true, true, Some(l)) = (req.no_done, sent_ready, last) {
                write_line(out, format_args!("ACK {l}"));
                return Ok(Some((job, walker)));
            }
            Ok(None)
        }
        Version::V2 => {
            if !req.done && !req.haves.is_empty() {
                // C git acknowledges each known have once, in request order.
                write_line(out, "acknowledgments");
                let known: Vec<&ObjectId> = job.haves.iter().collect();
                for h in &known {
                    they.got(&mut walker, h)?;
                }
                if known.is_empty() {
                    write_line(out, "NAK");
                }
                for h in &known {
                    write_line(out, format_args!("ACK {h}"));
                }
                let ready = !req.wait_for_done && they.ok_to_give_up(&mut walker, &job.wants)?;
                if !ready {
                    write_flush(out);
                    return Ok(None);
                }
                write_line(out, "ready");
                write_delim(out);
            }
            // shallow-info before wanted-refs, as gitprotocol-v2 says and git's fetch-pack
            // reads them. (C git 2.47's upload-pack writes wanted-refs first, which its own
            // client rejects: "expected 'packfile', received 'shallow-info'".)
            if req.deepens() || !req.shallows.is_empty() {
                write_line(out, "shallow-info");
                write_shallow_lines(out, &job.shallow);
                write_delim(out);
            }
            if !wanted_refs.is_empty() {
                write_line(out, "wanted-refs");
                for (oid, name) in &wanted_refs {
                    write_line(out, format_args!("{oid} {name}"));
                }
                write_delim(out);
            }
            write_line(out, "packfile");
            Ok(Some((job, walker)))
        }
    }
}

/// What the client has, kept as C git's `do_got_oid` keeps it: `have_obj` counts each have the
/// first time (a commit already marked as the parent of an earlier have does not count again);
/// `marked` holds have commits and their parents (git's THEY_HAVE flag), which is what
/// `ok_to_give_up` looks for.
#[derive(Default)]
struct TheyHave {
    have_obj: usize,
    marked: HashSet<ObjectId>,
    /// `ok_to_give_up` memo: the size of `marked` it was computed for (it only grows).
    give_up: Option<(usize, bool)>,
}

impl TheyHave {
    fn got(&mut self, walker: &mut Walker<'_>, id: &ObjectId) -> Result<(), OdbError> {
        let p = walker.peel(id)?;
        if p.tags.is_empty() && p.kind == gix_object::Kind::Commit {
            let knew = !self.marked.insert(*id);
            let parents = walker.commit(id)?.parents.clone();
            self.marked.extend(parents);
            if knew {
                return Ok(());
            }
        }
        self.have_obj += 1;
        Ok(())
    }

    /// git's `ok_to_give_up`: every want reaches something the client has.
    fn ok_to_give_up(
        &mut self,
        walker: &mut Walker<'_>,
        wants: &[ObjectId],
    ) -> Result<bool, OdbError> {
        if self.have_obj == 0 {
            return Ok(false);
        }
        if let Some((n, r)) = self.give_up
            && n == self.marked.len()
        {
            return Ok(r);
        }
        let r = walker.all_wants_reach(wants, &self.marked)?;
        self.give_up = Some((self.marked.len(), r));
        Ok(r)
    }
}

/// `shallow <oid>` and `unshallow <oid>` without a trailing LF, as C git sends them (libgit2
/// refuses these lines with an LF).
fn write_shallow_lines(out: &mut Vec<u8>, s: &ShallowOutcome) {
    for c in &s.shallow {
        write_unterminated(out, format_args!("shallow {c}"));
    }
    for c in &s.unshallow {
        write_unterminated(out, format_args!("unshallow {c}"));
    }
}

/// A ref name (full, or under refs/heads or refs/tags) or a hex object id.
fn resolve_rev(repo: &Repo, name: &str) -> Option<ObjectId> {
    for full in [
        name.to_string(),
        format!("refs/heads/{name}"),
        format!("refs/tags/{name}"),
    ] {
        if let Some(r) = repo.index.refs.get(&full) {
            return Some(r.oid);
        }
    }
    ObjectId::from_hex(name.as_bytes())
        .ok()
        .filter(|o| repo.odb.contains(o))
}

/// Whether the answer is the repository's packs, streamed whole: a full clone (no haves, no
/// shallow, no filter) that wants every ref of a closed repository (its packs hold exactly the
/// objects the refs reach, see `RefIndex::closed`), from packs that share no object.
fn whole_packs_answer(repo: &Repo, req: &FetchRequest, job: &PackJob) -> bool {
    let index = &repo.index;
    if !index.closed
        || repo.odb.packs.is_empty()
        || !job.haves.is_empty()
        || job.filter.is_some()
        || !req.ofs_delta
        || !req.shallows.is_empty()
        || req.deepens()
        || !job.shallow.grafts.is_empty()
    {
        return false;
    }
    let wants: HashSet<&ObjectId> = job.wants.iter().collect();
    let every_tip = index.tips().all(|o| wants.contains(&o));
    every_tip && disjoint(&repo.odb)
}

/// No object is in two packs (checked from every pack but the largest).
fn disjoint(odb: &crate::odb::Odb) -> bool {
    let largest = (0..odb.packs.len())
        .max_by_key(|&i| odb.packs[i].num_objects())
        .unwrap_or(0);
    odb.packs.iter().enumerate().all(|(i, p)| {
        i == largest
            || p.oids().all(|id| {
                odb.packs
                    .iter()
                    .enumerate()
                    .all(|(j, q)| j == i || q.offset_of(&id).is_none())
            })
    })
}

/// A pack that failed mid-way: a client that went away ends the request (`Err`); anything
/// else is logged and told to the client on the error band.
fn report_failure(
    sb: &mut Sideband<'_, dyn Write + '_>,
    repo: &Repo,
    what: &str,
    e: OdbError,
) -> io::Result<()> {
    let msg = failure(repo, what, e)?;
    sb.error(&msg)
}

/// A failed pack: the client went away (the error, to stop), or the message for band 3
/// (logged as `what`).
fn failure(repo: &Repo, what: &str, e: OdbError) -> io::Result<String> {
    match e {
        OdbError::Output(e) => Err(e),
        e => {
            tracing::error!(repo = %repo.root, error = %e, "{what}");
            Ok(format!("goprox: {}", e.public_message()))
        }
    }
}

/// The framing the client asked for: side-band-64k (always in v2), side-band, or none.
fn sideband<'w>(
    req: &FetchRequest,
    version: Version,
    out: &'w mut (dyn Write + 'w),
) -> Sideband<'w, dyn Write + 'w> {
    match framing(req, version) {
        Some(max) => Sideband::new(out, max),
        None => Sideband::raw(out),
    }
}

/// The pkt-line size of the side-band the client asked for; `None` for none.
fn framing(req: &FetchRequest, version: Version) -> Option<usize> {
    if version == Version::V2 || req.side_band_64k {
        Some(65520)
    } else if req.side_band {
        Some(1000)
    } else {
        None
    }
}

/// When a fetch can be answered with the pack of a fill under way, passed through as it
/// arrives, the head of that answer (C git's for a clone: `NAK` in v0; in v2 the
/// `wanted-refs` section if refs were wanted by name, then `packfile`). That is a clone of
/// everything: it wants exactly the tips of `index` (what the fill fetches: the pack is their
/// closure), by id or by name, has nothing, and asks for no shallow history and no filter; it
/// must understand OFS_DELTA (upstream's pack uses it). In v0 the request must be complete
/// (`done`).
pub fn fill_pack_head(
    req: &FetchRequest,
    version: Version,
    index: &crate::refs::RefIndex,
) -> Option<Vec<u8>> {
    use std::collections::BTreeSet;
    let plain = req.haves.is_empty()
        && req.shallows.is_empty()
        && !req.deepens()
        && req.filter.is_none()
        && req.ofs_delta
        && (version == Version::V2 || req.done);
    if !plain {
        return None;
    }
    let tips: BTreeSet<ObjectId> = index.tips().collect();
    let mut wanted_refs = Vec::new();
    for name in &req.want_refs {
        wanted_refs.push((want_ref(index, name)?, name));
    }
    let wants: BTreeSet<ObjectId> = req
        .wants
        .iter()
        .copied()
        .chain(wanted_refs.iter().map(|(o, _)| *o))
        .collect();
    if tips.is_empty() || wants != tips {
        return None;
    }
    let mut head = Vec::new();
    match version {
        Version::V0 => write_line(&mut head, "NAK"),
        Version::V2 => {
            if !wanted_refs.is_empty() {
                write_line(&mut head, "wanted-refs");
                for (oid, name) in &wanted_refs {
                    write_line(&mut head, format_args!("{oid} {name}"));
                }
                write_delim(&mut head);
            }
            write_line(&mut head, "packfile");
        }
    }
    Some(head)
}

/// Answer a fetch with `head` ([`fill_pack_head`]) and the pack `next` yields (`Ok(None)`
/// after its last bytes) on band 1; an error of the source ends the response on band 3.
fn pass_through(
    req: &FetchRequest,
    version: Version,
    head: &[u8],
    next: &mut dyn FnMut() -> io::Result<Option<bytes::Bytes>>,
    out: &mut dyn Write,
) -> io::Result<()> {
    out.write_all(head)?;
    let mut sb = sideband(req, version, out);
    if !req.no_progress {
        sb.progress("goprox: passing upstream's pack through while it is stored\n")?;
    }
    let started = Instant::now();
    let mut bytes = 0u64;
    loop {
        match next() {
            Ok(Some(b)) => {
                bytes += b.len() as u64;
                sb.write_all(&b)?;
            }
            Ok(None) => {
                metrics::PACKS_SERVED.inc();
                metrics::PACKS_PASSED_THROUGH.inc();
                metrics::PACK_BYTES_SERVED.add(bytes);
                tracing::info!(
                    bytes,
                    ms = started.elapsed().as_millis() as u64,
                    "upstream's pack passed through"
                );
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, bytes, "passing upstream's pack through failed");
                metrics::REQUEST_ERRORS.inc();
                sb.error(&format!("goprox: {e}"))?;
                break;
            }
        }
    }
    sb.finish()
}

fn send_pack(
    repo: &Repo,
    req: &FetchRequest,
    version: Version,
    job: PackJob,
    mut walker: Walker<'_>,
    out: &mut dyn Write,
) -> io::Result<Option<WholeAnswer>> {
    let mut sb = sideband(req, version, out);
    let progress = !req.no_progress;
    let odb = &repo.odb;
    if whole_packs_answer(repo, req, &job) {
        if progress {
            sb.progress(&format!(
                "goprox: sending {} stored pack(s) whole\n",
                odb.packs.len()
            ))?;
        }
        return Ok(Some(WholeAnswer {
            max_pkt: framing(req, version),
        }));
    }
    let mut wants = job.wants.clone();
    wants.extend(job.shallow.extra_wants.iter().copied());
    let mut haves = job.haves.clone();
    haves.extend(job.shallow.extra_edges.iter().copied());
    let tags: Vec<(ObjectId, ObjectId)> = if req.include_tag {
        repo.index
            .refs
            .values()
            .filter_map(|r| Some((r.oid, r.peeled?)))
            .collect()
    } else {
        Vec::new()
    };
    // Thin packs only when asked, and never for partial clones (the client may lack the bases).
    let thin = req.thin_pack && req.filter.is_none();
    // A pack made before for the same inputs is sent as it is.
    let cache_key = {
        let mut k = pack_cache::KeyBuilder::default();
        k.text(&format!(
            "ofs {} thin {} filter {:?}",
            req.ofs_delta, thin, job.filter
        ));
        k.ids("wants", wants.iter().copied());
        k.ids("haves", haves.iter().copied());
        k.ids("grafts", job.shallow.grafts.iter().copied());
        k.ids("tags", tags.iter().flat_map(|(t, p)| [*t, *p]));
        let fp = crate::refs::packset_fingerprint(odb.packs.iter().map(|p| p.name.as_str()));
        crate::refs::Keys::new(&repo.root).pack_cache(&fp, &k.finish())
    };
    let repo_objects: u64 = odb.packs.iter().map(|p| u64::from(p.num_objects())).sum();
    if pack_cache::worth_looking(&odb.io, &cache_key, repo_objects) {
        let started = Instant::now();
        match pack_cache::serve(&odb.io, &cache_key, &mut sb) {
            Ok(None) => {}
            Ok(Some(bytes)) => {
                metrics::PACKS_SERVED.inc();
                metrics::PACK_BYTES_SERVED.add(bytes);
                tracing::info!(repo = %repo.root, bytes, ms = started.elapsed().as_millis() as u64,
                    "cached pack sent");
                return sb.finish().map(|()| None);
            }
            Err(e) => {
                report_failure(&mut sb, repo, "sending a cached pack failed", e)?;
                return sb.finish().map(|()| None);
            }
        }
    }
    let started = Instant::now();
    // A client with its whole history (no shallow boundary, no deepening) and no filter: the
    // bitmaps know everything it has. Its thin fetches are answered from them (no walk, and
    // every stored delta whose base it has goes out as it is); any other fetch of it is walked,
    // and what the walk picked that the client has (deep in its history, where the walk does
    // not look) is left out.
    let whole_history = !haves.is_empty()
        && !req.deepens()
        && job.shallow.grafts.is_empty()
        && job.shallow.extra_wants.is_empty()
        && job.filter.is_none();
    let bitmaps = whole_history.then(|| odb.bitmaps()).flatten();
    let closure = bitmaps
        .as_ref()
        .and_then(|(pack, b)| ClientClosure::of(odb, *pack, b, &haves));
    let selected = match (&bitmaps, &closure) {
        (Some((_, b)), Some(client)) if thin => {
            match crate::odb::bitmap::select(odb, b, &wants, client, &tags) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(repo = %repo.root, error = %e, "bitmaps could not answer; walking");
                    None
                }
            }
        }
        _ => None,
    };
    let by_bitmaps = selected.is_some();
    let result = match selected {
        Some(entries) => {
            metrics::BITMAP_ANSWERS.inc();
            Ok(entries)
        }
        None => {
            let plan = PackPlan {
                wants: &wants,
                haves: &haves,
                grafts: Some(&job.shallow.grafts),
                include_tags: &tags,
                filter: job.filter,
            };
            walker
                .objects_to_send(&plan)
                .and_then(|ids| writer::plan(odb, &ids))
                .map(|mut entries| {
                    if let Some(c) = &closure {
                        entries.retain(|(loc, _)| !c.contains(odb, *loc));
                    }
                    entries
                })
        }
    };
    let entries = match result {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(repo = %repo.root, error = %e, "counting objects failed");
            sb.error(&format!("goprox: {}", e.public_message()))?;
            return sb.finish().map(|()| None);
        }
    };
    if progress {
        sb.progress(&format!("goprox: counted {} objects\n", entries.len()))?;
    }
    let opts = writer::WriteOptions {
        ofs_delta: req.ofs_delta,
        thin_bases: thin.then_some(&walker.client_has),
        names: Some(&walker.names),
        client_names: thin.then_some(&walker.client_names),
        // Thin deltas only when the client allows them.
        client_closure: closure.as_ref().filter(|_| thin),
    };
    let mut tee = pack_cache::Tee::new(&mut sb);
    let written = writer::write_pack(odb, &entries, opts, &mut tee);
    let copy = tee.into_copy();
    match written {
        Ok(stats) => {
            metrics::PACKS_SERVED.inc();
            metrics::OBJECTS_SERVED.add(stats.objects);
            metrics::PACK_BYTES_SERVED.add(stats.bytes);
            let cost = started.elapsed();
            tracing::info!(repo = %repo.root, objects = stats.objects, bytes = stats.bytes,
                reused = stats.reused, reused_deltas = stats.reused_deltas, thin_deltas = stats.thin_deltas,
                recompressed = stats.recompressed, new_deltas = stats.new_deltas,
                bitmaps = by_bitmaps, ms = cost.as_millis() as u64, "pack sent");
            if let Some(copy) = copy
                && cost >= odb.io.pack_cache_min_cost
            {
                pack_cache::keep(&odb.io, cache_key, copy);
            }
            if progress {
                sb.progress(&format!(
                    "goprox: total {} objects ({} reused verbatim, {} deltas kept, {} thin, {} new deltas, {} recompressed)\n",
                    stats.objects, stats.reused, stats.reused_deltas, stats.thin_deltas, stats.new_deltas, stats.recompressed
                ))?;
            }
        }
        Err(e) => report_failure(&mut sb, repo, "pack generation failed", e)?,
    }
    sb.finish().map(|()| None)
}
