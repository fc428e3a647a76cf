//! upload-pack: negotiation (v0/v1 multi_ack_detailed over stateless HTTP, and v2 `fetch`),
//! shallow/deepen handling, and streaming the pack. [`respond`] takes a request and gives the
//! response body: the work runs on a blocking thread, a whole-pack answer streams from async
//! code.

use super::pktline::{err_line, write_delim, write_flush, write_line, write_unterminated};
use super::request::FetchRequest;
use super::sideband::Sideband;
use crate::metrics;
use crate::odb::bitmap::ClientClosure;
use crate::odb::walk::{Deepen, Filter, PackPlan, ShallowOutcome, ToSend, Walker};
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

/// The protocol version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Protocol v0/v1: a stateless-RPC `git-upload-pack` POST.
    V0,
    /// Protocol v2 (`Git-Protocol: version=2`): a `command=fetch` request.
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
/// Every line written is written exactly as C git's upload-pack writes it (see the table in
/// `protocol/mod.rs`).
fn negotiate<'r>(
    repo: &'r Repo,
    req: &FetchRequest,
    version: Version,
    out: &mut Vec<u8>,
) -> Result<Option<(PackJob, Walker<'r>)>, Refuse> {
    let (wants, wanted_refs) = resolve_wants(repo, req)?;
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
    let mut walker = Walker::new(&repo.odb);
    let shallow = shallow_boundary(repo, req, &wants, &mut walker)?;
    let job = PackJob {
        wants,
        haves: common_haves(repo, req),
        shallow,
        filter,
    };
    let pack_due = match version {
        Version::V0 => acknowledge_v0(repo, req, &job, &mut walker, out)?,
        Version::V2 => acknowledge_v2(req, &job, &wanted_refs, &mut walker, out)?,
    };
    Ok(pack_due.then_some((job, walker)))
}

/// The wanted objects: `want` lines and the objects `want-ref` lines name (those also
/// returned with their names); each must be in the store.
#[allow(clippy::type_complexity)]
fn resolve_wants(
    repo: &Repo,
    req: &FetchRequest,
) -> Result<(Vec<ObjectId>, Vec<(ObjectId, String)>), Refuse> {
    let mut wants = req.wants.clone();
    let mut wanted_refs = Vec::new();
    for name in &req.want_refs {
        let oid =
            want_ref(&repo.index, name).ok_or_else(|| Refuse(format!("unknown ref {name}")))?;
        wants.push(oid);
        wanted_refs.push((oid, name.clone()));
    }
    if let Some(w) = wants.iter().find(|w| !repo.odb.contains(w)) {
        return Err(Refuse(format!("upload-pack: not our ref {w}")));
    }
    Ok((wants, wanted_refs))
}

/// Haves we know, in the client's order, without repeats: they bound the pack.
fn common_haves(repo: &Repo, req: &FetchRequest) -> Vec<ObjectId> {
    let mut seen = HashSet::new();
    req.haves
        .iter()
        .filter(|h| repo.odb.contains(h) && seen.insert(**h))
        .copied()
        .collect()
}

/// The shallow boundary: computed from the deepen arguments, or the client's own shallow
/// commits (those we know) kept as they are.
fn shallow_boundary(
    repo: &Repo,
    req: &FetchRequest,
    wants: &[ObjectId],
    walker: &mut Walker<'_>,
) -> Result<ShallowOutcome, Refuse> {
    if req.depth.is_some() && (req.deepen_since.is_some() || !req.deepen_not.is_empty()) {
        // C git's wording (upload-pack.c, send_shallow_list).
        return Err(Refuse(
            "upload-pack: deepen and deepen-since (or deepen-not) cannot be used together".into(),
        ));
    }
    if !req.deepens() {
        return Ok(ShallowOutcome {
            grafts: req
                .shallows
                .iter()
                .filter(|s| repo.odb.contains(s))
                .copied()
                .collect(),
            ..Default::default()
        });
    }
    let mut want_commits = Vec::new();
    for w in wants {
        if let Some(c) = walker.peel_commit(w)? {
            want_commits.push(c);
        }
    }
    let mut not = Vec::new();
    for r in &req.deepen_not {
        not.push(
            resolve_rev(repo, r).ok_or_else(|| Refuse(format!("deepen-not: unknown ref {r}")))?,
        );
    }
    let deepen = Deepen {
        depth: req.depth,
        relative: req.deepen_relative,
        since: req.deepen_since,
        not,
    };
    Ok(walker.shallow(&want_commits, &req.shallows, &deepen)?)
}

/// v0/v1: the shallow list, then one stateless round of C git's `get_common_commits` over
/// the haves. True when the pack follows.
fn acknowledge_v0(
    repo: &Repo,
    req: &FetchRequest,
    job: &PackJob,
    walker: &mut Walker<'_>,
    out: &mut Vec<u8>,
) -> Result<bool, Refuse> {
    if req.deepens() {
        write_shallow_lines(out, &job.shallow);
        write_flush(out);
    }
    if !req.have_section {
        return Ok(false);
    }
    let mut they = TheyHave::default();
    let multi_ack = req.multi_ack_detailed || req.multi_ack;
    let (mut got_common, mut got_other, mut sent_ready) = (false, false, false);
    let mut last = None;
    for h in &req.haves {
        if !repo.odb.contains(h) {
            got_other = true;
            if multi_ack && they.ok_to_give_up(walker, &job.wants)? {
                if req.multi_ack_detailed {
                    sent_ready = true;
                    write_line(out, format_args!("ACK {h} ready"));
                } else {
                    write_line(out, format_args!("ACK {h} continue"));
                }
            }
            continue;
        }
        they.got(walker, h)?;
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
        return Ok(true);
    }
    // The batch ended with a flush.
    if req.multi_ack_detailed
        && got_common
        && !got_other
        && they.ok_to_give_up(walker, &job.wants)?
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
        return Ok(true);
    }
    Ok(false)
}

/// v2: acknowledgments (unless `done`), then shallow-info and wanted-refs sections and the
/// `packfile` line when the pack follows. True when it does.
fn acknowledge_v2(
    req: &FetchRequest,
    job: &PackJob,
    wanted_refs: &[(ObjectId, String)],
    walker: &mut Walker<'_>,
    out: &mut Vec<u8>,
) -> Result<bool, Refuse> {
    if !req.done && !req.haves.is_empty() {
        // C git acknowledges each known have once, in request order.
        let mut they = TheyHave::default();
        write_line(out, "acknowledgments");
        for h in &job.haves {
            they.got(walker, h)?;
        }
        if job.haves.is_empty() {
            write_line(out, "NAK");
        }
        for h in &job.haves {
            write_line(out, format_args!("ACK {h}"));
        }
        let ready = !req.wait_for_done && they.ok_to_give_up(walker, &job.wants)?;
        if !ready {
            write_flush(out);
            return Ok(false);
        }
        write_line(out, "ready");
        write_delim(out);
    }
    // shallow-info before wanted-refs, as gitprotocol-v2 says and git's fetch-pack reads
    // them. (C git 2.47's upload-pack writes wanted-refs first, which its own client rejects:
    // "expected 'packfile', received 'shallow-info'".)
    if req.deepens() || !req.shallows.is_empty() {
        write_line(out, "shallow-info");
        write_shallow_lines(out, &job.shallow);
        write_delim(out);
    }
    if !wanted_refs.is_empty() {
        write_line(out, "wanted-refs");
        for (oid, name) in wanted_refs {
            write_line(out, format_args!("{oid} {name}"));
        }
        write_delim(out);
    }
    write_line(out, "packfile");
    Ok(true)
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

/// Send the pack that negotiation decided on: the stored packs whole (left to
/// [`stream_whole`]), a pack kept from an earlier identical request, or a generated one.
fn send_pack(
    repo: &Repo,
    req: &FetchRequest,
    version: Version,
    job: PackJob,
    mut walker: Walker<'_>,
    out: &mut dyn Write,
) -> io::Result<Option<WholeAnswer>> {
    let mut sb = sideband(req, version, out);
    if whole_packs_answer(repo, req, &job) {
        if !req.no_progress {
            sb.progress(&format!(
                "goprox: sending {} stored pack(s) whole\n",
                repo.odb.packs.len()
            ))?;
        }
        return Ok(Some(WholeAnswer {
            max_pkt: framing(req, version),
        }));
    }
    let inputs = PackInputs::of(repo, req, &job);
    let cache_key = inputs.cache_key(repo, req, &job);
    if send_kept_pack(repo, &cache_key, &mut sb)? {
        return sb.finish().map(|()| None);
    }
    let started = Instant::now();
    let selection = select_objects(repo, req, &job, &inputs, &mut walker);
    let counting = started.elapsed();
    let entries = match selection.entries {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(repo = %repo.root, error = %e, "counting objects failed");
            sb.error(&format!("goprox: {}", e.public_message()))?;
            return sb.finish().map(|()| None);
        }
    };
    if !req.no_progress {
        sb.progress(&format!("goprox: counted {} objects\n", entries.len()))?;
    }
    let generated = Generated {
        entries,
        found: selection.found,
        closure: selection.closure,
        by_bitmaps: selection.by_bitmaps,
        cache_key,
        started,
        counting,
    };
    write_generated(repo, req, &inputs, generated, &mut sb)?;
    sb.finish().map(|()| None)
}

/// What a generated pack is made from: the negotiated wants and haves with the shallow
/// boundary's additions, the tags to include, and whether it may be thin.
struct PackInputs {
    wants: Vec<ObjectId>,
    haves: Vec<ObjectId>,
    tags: Vec<(ObjectId, ObjectId)>,
    thin: bool,
}

impl PackInputs {
    fn of(repo: &Repo, req: &FetchRequest, job: &PackJob) -> Self {
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
        PackInputs {
            wants,
            haves,
            tags,
            // Thin packs only when asked, and never for partial clones (the client may lack
            // the bases).
            thin: req.thin_pack && req.filter.is_none(),
        }
    }

    /// The pack cache key of these inputs over the repository's current packs: a pack made
    /// before for the same inputs is sent as it is.
    fn cache_key(&self, repo: &Repo, req: &FetchRequest, job: &PackJob) -> String {
        let mut k = pack_cache::KeyBuilder::default();
        k.text(&format!(
            "ofs {} thin {} filter {:?}",
            req.ofs_delta, self.thin, job.filter
        ));
        k.ids("wants", self.wants.iter().copied());
        k.ids("haves", self.haves.iter().copied());
        k.ids("grafts", job.shallow.grafts.iter().copied());
        k.ids("tags", self.tags.iter().flat_map(|(t, p)| [*t, *p]));
        let packs = repo.odb.packs.iter().map(|p| p.name.as_str());
        let fp = crate::refs::packset_fingerprint(packs);
        crate::refs::Keys::new(&repo.root).pack_cache(&fp, &k.finish())
    }
}

/// Send the pack kept under `cache_key`, if there is one worth looking for; true when the
/// response is complete (sent, or its failure reported).
fn send_kept_pack(
    repo: &Repo,
    cache_key: &str,
    sb: &mut Sideband<'_, dyn Write + '_>,
) -> io::Result<bool> {
    let odb = &repo.odb;
    let repo_objects: u64 = odb.packs.iter().map(|p| u64::from(p.num_objects())).sum();
    if !pack_cache::worth_looking(&odb.io, cache_key, repo_objects) {
        return Ok(false);
    }
    let started = Instant::now();
    match pack_cache::serve(&odb.io, cache_key, sb) {
        Ok(None) => Ok(false),
        Ok(Some(bytes)) => {
            metrics::PACKS_SERVED.inc();
            metrics::PACK_BYTES_SERVED.add(bytes);
            tracing::info!(repo = %repo.root, bytes, ms = started.elapsed().as_millis() as u64,
                "cached pack sent");
            Ok(true)
        }
        Err(e) => {
            report_failure(sb, repo, "sending a cached pack failed", e)?;
            Ok(true)
        }
    }
}

/// The objects picked for a generated pack, and how.
struct Selection {
    entries: crate::odb::Result<Vec<(crate::odb::Location, ObjectId)>>,
    /// What the walk found besides the objects (for the delta search); empty after bitmaps.
    found: ToSend,
    /// What the client has, by the bitmaps (when they know).
    closure: Option<ClientClosure>,
    by_bitmaps: bool,
}

/// Pick the objects to send. A client with its whole history (no shallow boundary, no
/// deepening) and no filter: the bitmaps know everything it has. Its thin fetches are answered
/// from them (no walk, and every stored delta whose base it has goes out as it is); any other
/// fetch of it is walked, and what the walk picked that the client has (deep in its history,
/// where the walk does not look) is left out.
fn select_objects(
    repo: &Repo,
    req: &FetchRequest,
    job: &PackJob,
    inputs: &PackInputs,
    walker: &mut Walker<'_>,
) -> Selection {
    let odb = &repo.odb;
    let whole_history = !inputs.haves.is_empty()
        && !req.deepens()
        && job.shallow.grafts.is_empty()
        && job.shallow.extra_wants.is_empty()
        && job.filter.is_none();
    let bitmaps = whole_history.then(|| odb.bitmaps()).flatten();
    let closure = bitmaps
        .as_ref()
        .and_then(|(pack, b)| ClientClosure::of(odb, *pack, b, &inputs.haves));
    let selected = match (&bitmaps, &closure) {
        (Some((_, b)), Some(client)) if inputs.thin => {
            match crate::odb::bitmap::select(odb, b, &inputs.wants, client, &inputs.tags) {
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
    let mut found = ToSend::default();
    let entries = match selected {
        Some(entries) => {
            metrics::BITMAP_ANSWERS.inc();
            Ok(entries)
        }
        None => {
            let plan = PackPlan {
                wants: &inputs.wants,
                haves: &inputs.haves,
                grafts: Some(&job.shallow.grafts),
                include_tags: &inputs.tags,
                filter: job.filter,
            };
            walker
                .objects_to_send(&plan)
                .and_then(|sent| {
                    let entries = writer::plan(odb, &sent.ids);
                    found = ToSend {
                        ids: Vec::new(),
                        ..sent
                    };
                    entries
                })
                .map(|mut entries| {
                    if let Some(c) = &closure {
                        entries.retain(|(loc, _)| !c.contains(odb, *loc));
                    }
                    entries
                })
        }
    };
    Selection {
        entries,
        found,
        closure,
        by_bitmaps,
    }
}

/// A pack about to be generated: its entries, and what its log line and the pack cache need.
struct Generated {
    entries: Vec<(crate::odb::Location, ObjectId)>,
    found: ToSend,
    closure: Option<ClientClosure>,
    by_bitmaps: bool,
    cache_key: String,
    started: Instant,
    /// Of the time since `started`, what selecting the objects took.
    counting: std::time::Duration,
}

/// Write the pack of `g.entries` (a copy kept in the pack cache when it was costly to make).
fn write_generated(
    repo: &Repo,
    req: &FetchRequest,
    inputs: &PackInputs,
    g: Generated,
    sb: &mut Sideband<'_, dyn Write + '_>,
) -> io::Result<()> {
    let odb = &repo.odb;
    let opts = write_options(req, inputs, &g.found, g.closure.as_ref());
    let mut tee = pack_cache::Tee::new(sb);
    let written = writer::write_pack(odb, &g.entries, opts, &mut tee);
    let copy = tee.into_copy();
    match written {
        Ok(stats) => {
            metrics::PACKS_SERVED.inc();
            metrics::OBJECTS_SERVED.add(stats.objects);
            metrics::PACK_BYTES_SERVED.add(stats.bytes);
            let cost = g.started.elapsed();
            tracing::info!(repo = %repo.root, objects = stats.objects, bytes = stats.bytes,
                reused = stats.reused, reused_deltas = stats.reused_deltas, thin_deltas = stats.thin_deltas,
                recompressed = stats.recompressed, new_deltas = stats.new_deltas,
                bitmaps = g.by_bitmaps, count_ms = g.counting.as_millis() as u64,
                ms = cost.as_millis() as u64, "pack sent");
            if let Some(copy) = copy
                && cost >= odb.io.pack_cache_min_cost
            {
                pack_cache::keep(&odb.io, g.cache_key, copy);
            }
            if !req.no_progress {
                sb.progress(&format!(
                    "goprox: total {} objects ({} reused verbatim, {} deltas kept, {} thin, {} new deltas, {} recompressed)\n",
                    stats.objects, stats.reused, stats.reused_deltas, stats.thin_deltas, stats.new_deltas, stats.recompressed
                ))
            } else {
                Ok(())
            }
        }
        Err(e) => report_failure(sb, repo, "pack generation failed", e),
    }
}

/// How a generated pack is written: deltas against what the client has only in a thin pack.
fn write_options<'a>(
    req: &FetchRequest,
    inputs: &PackInputs,
    found: &'a ToSend,
    closure: Option<&'a ClientClosure>,
) -> writer::WriteOptions<'a> {
    let thin = inputs.thin;
    writer::WriteOptions {
        ofs_delta: req.ofs_delta,
        thin_bases: thin.then_some(&found.client_has),
        names: Some(&found.names),
        client_names: thin.then_some(&found.client_names),
        client_closure: closure.filter(|_| thin),
    }
}

/// What [`keep_ahead`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeptAhead {
    /// The store already kept that pack.
    Present,
    /// The pack was made and handed to the store (its upload is tracked background work).
    Made {
        /// Objects in the pack.
        objects: u64,
        /// Its size.
        bytes: u64,
    },
    /// Nothing to keep: the request needs no pack, or its pack is larger than the pack cache
    /// keeps.
    Nothing,
}

/// Make the pack `req` would get from `repo` and keep it in the pack cache before any client
/// asks: the first client of that request, on any instance, is then sent the kept pack instead
/// of waiting for the walk, the delta resolution and the compression. `Repos` calls it after a
/// fill or refresh, for the shallow fetch of the newest version. Blocking (a thread of its
/// own: it is CPU work).
pub fn keep_ahead(repo: &Repo, req: &FetchRequest) -> crate::odb::Result<KeptAhead> {
    let mut head = Vec::new();
    let (job, mut walker) = match negotiate(repo, req, Version::V2, &mut head) {
        Ok(Some(x)) => x,
        Ok(None) => return Ok(KeptAhead::Nothing),
        Err(Refuse(msg)) => return Err(OdbError::Unanswerable(msg)),
    };
    let inputs = PackInputs::of(repo, req, &job);
    let key = inputs.cache_key(repo, req, &job);
    let io = &repo.odb.io;
    if pack_cache::is_kept(io, &key)? {
        return Ok(KeptAhead::Present);
    }
    let selection = select_objects(repo, req, &job, &inputs, &mut walker);
    let entries = selection.entries?;
    let opts = write_options(req, &inputs, &selection.found, selection.closure.as_ref());
    let mut sink = io::sink();
    let mut tee = pack_cache::Tee::new(&mut sink);
    let stats = writer::write_pack(&repo.odb, &entries, opts, &mut tee)?;
    Ok(match tee.into_copy() {
        Some(copy) => {
            pack_cache::keep(io, key, copy);
            KeptAhead::Made {
                objects: stats.objects,
                bytes: stats.bytes,
            }
        }
        None => KeptAhead::Nothing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::odb::pack::Pack;
    use crate::odb::{Io, Odb};
    use crate::refs::{PackEntry, RefEntry, RefIndex};
    use crate::store::{DynStore, ETag, PutMode, memory::MemoryStore};
    use gix_object::Kind;

    struct Fixture {
        repo: Repo,
        /// Oldest first.
        commits: Vec<ObjectId>,
        _rt: tokio::runtime::Runtime,
    }

    fn id_of(kind: Kind, data: &[u8]) -> ObjectId {
        gix_object::compute_hash(gix_hash::Kind::Sha1, kind, data).expect("hash")
    }

    /// A linear history of `n` commits on `main`, each with its own one-file tree, in one pack
    /// in a memory store (the ref index not `closed`, so packs are generated).
    fn history(n: usize) -> Fixture {
        let mut objects: Vec<(writer::EntryKind, Vec<u8>)> = Vec::new();
        let mut commits: Vec<ObjectId> = Vec::new();
        for i in 0..n {
            let blob = format!("revision {i}\n").into_bytes();
            let mut tree = b"100644 f\0".to_vec();
            tree.extend_from_slice(id_of(Kind::Blob, &blob).as_bytes());
            let mut commit = format!("tree {}\n", id_of(Kind::Tree, &tree));
            if let Some(p) = commits.last() {
                commit.push_str(&format!("parent {p}\n"));
            }
            let t = 1_600_000_000 + 60 * i as i64;
            commit.push_str(&format!(
                "author A <a@example.test> {t} +0000\ncommitter A <a@example.test> {t} +0000\n\nc{i}\n"
            ));
            commits.push(id_of(Kind::Commit, commit.as_bytes()));
            objects.push((writer::EntryKind::Blob, blob));
            objects.push((writer::EntryKind::Tree, tree));
            objects.push((writer::EntryKind::Commit, commit.into_bytes()));
        }
        let mut pack = b"PACK\0\0\0\x02".to_vec();
        pack.extend_from_slice(&(objects.len() as u32).to_be_bytes());
        for (kind, data) in &objects {
            writer::entry_header(*kind, data.len() as u64, &mut pack);
            pack.extend_from_slice(&crate::odb::deflate(data));
        }
        let sum = sha1::Digest::finalize(<sha1::Sha1 as sha1::Digest>::new_with_prefix(&pack));
        pack.extend_from_slice(&sum);
        let indexed = crate::odb::ingest::index_in_memory(&pack, 1 << 20).expect("index");
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let store: DynStore = Arc::new(MemoryStore::new());
        let key = format!("example.test/r/@git/packs/pack-{}.pack", indexed.name);
        rt.block_on(store.put(&key, pack.clone().into(), PutMode::CreateOnly))
            .expect("put");
        let p = Pack::from_index_bytes(
            indexed.name.clone(),
            Arc::from(key.as_str()),
            pack.len() as u64,
            indexed.idx,
        )
        .expect("pack");
        let head = *commits.last().expect("a commit");
        let index = RefIndex {
            version: crate::refs::FORMAT_VERSION,
            generation: 1,
            root: "example.test/r".into(),
            upstream: "https://example.test/r".into(),
            subdir: String::new(),
            fetched_at: 0,
            head_symref: Some("refs/heads/main".into()),
            head_oid: None,
            refs: [(
                "refs/heads/main".to_string(),
                RefEntry {
                    oid: head,
                    peeled: None,
                },
            )]
            .into(),
            packs: vec![PackEntry {
                name: indexed.name,
                checksum: None,
                size: pack.len() as u64,
                objects: objects.len() as u32,
                walk_end: None,
                bitmap: false,
            }],
            retired: Vec::new(),
            closed: false,
        };
        let io = Arc::new(Io::new(store, rt.handle().clone(), 8 << 20));
        Fixture {
            repo: Repo {
                root: index.root.clone(),
                index,
                etag: ETag("\"1\"".into()),
                odb: Arc::new(Odb::new(vec![Arc::new(p)], io)),
            },
            commits,
            _rt: rt,
        }
    }

    /// pkt-lines as text: `0000` for a flush, `0001` for a delimiter, else the payload without
    /// its newline; band 1 (pack data) is collected apart.
    fn parse(mut b: &[u8]) -> (Vec<String>, Vec<u8>) {
        let (mut lines, mut pack) = (Vec::new(), Vec::new());
        let mut in_pack = false;
        while b.len() >= 4 {
            let len = usize::from_str_radix(std::str::from_utf8(&b[..4]).expect("hex"), 16)
                .expect("length");
            if len < 4 {
                lines.push(format!("{len:04}"));
                b = &b[4..];
                continue;
            }
            let payload = &b[4..len];
            b = &b[len..];
            if in_pack {
                match payload.first() {
                    Some(1) => pack.extend_from_slice(&payload[1..]),
                    Some(2) => {}
                    _ => lines.push(String::from_utf8_lossy(&payload[1..]).into_owned()),
                }
                continue;
            }
            let text = String::from_utf8_lossy(payload).trim_end().to_string();
            in_pack = text == "packfile";
            lines.push(text);
        }
        (lines, pack)
    }

    fn v2(wants: &[ObjectId]) -> FetchRequest {
        FetchRequest {
            wants: wants.to_vec(),
            ofs_delta: true,
            no_progress: true,
            ..Default::default()
        }
    }

    fn negotiated(f: &Fixture, req: &FetchRequest, version: Version) -> (Vec<String>, bool) {
        let mut out = Vec::new();
        let due = negotiate(&f.repo, req, version, &mut out)
            .unwrap_or_else(|Refuse(m)| panic!("refused: {m}"))
            .is_some();
        (parse(&out).0, due)
    }

    fn refusal(f: &Fixture, req: &FetchRequest) -> String {
        match negotiate(&f.repo, req, Version::V2, &mut Vec::new()) {
            Err(Refuse(m)) => m,
            Ok(_) => panic!("not refused"),
        }
    }

    #[test]
    fn negotiate_v2_acknowledges_known_haves_then_is_ready() {
        let f = history(3);
        let unknown = ObjectId::from_hex(&[b'9'; 40]).expect("id");
        let mut req = v2(&[f.commits[2]]);
        req.haves = vec![unknown, f.commits[0], f.commits[0]];
        let c1 = f.commits[0].to_string();
        assert_eq!(
            negotiated(&f, &req, Version::V2),
            (
                vec![
                    "acknowledgments".into(),
                    format!("ACK {c1}"),
                    "ready".into(),
                    "0001".into(),
                    "packfile".into()
                ],
                true
            )
        );
        // Nothing in common: NAK, and the client is asked for more.
        req.haves = vec![unknown];
        assert_eq!(
            negotiated(&f, &req, Version::V2),
            (
                vec!["acknowledgments".into(), "NAK".into(), "0000".into()],
                false
            )
        );
        // `done`: straight to the pack.
        req.done = true;
        assert_eq!(
            negotiated(&f, &req, Version::V2),
            (vec!["packfile".into()], true)
        );
    }

    #[test]
    fn negotiate_v2_puts_shallow_info_before_wanted_refs() {
        let f = history(3);
        let mut req = v2(&[]);
        req.want_refs = vec!["refs/heads/main".into()];
        req.depth = Some(1);
        req.done = true;
        let head = f.commits[2].to_string();
        assert_eq!(
            negotiated(&f, &req, Version::V2),
            (
                vec![
                    "shallow-info".into(),
                    format!("shallow {head}"),
                    "0001".into(),
                    "wanted-refs".into(),
                    format!("{head} refs/heads/main"),
                    "0001".into(),
                    "packfile".into()
                ],
                true
            )
        );
    }

    #[test]
    fn negotiate_v0_one_stateless_round_as_c_git() {
        let f = history(3);
        let c1 = f.commits[0].to_string();
        let mut req = v2(&[f.commits[2]]);
        req.have_section = true;
        req.multi_ack_detailed = true;
        req.haves = vec![f.commits[0]];
        assert_eq!(
            negotiated(&f, &req, Version::V0),
            (
                vec![
                    format!("ACK {c1} common"),
                    format!("ACK {c1} ready"),
                    "NAK".into()
                ],
                false
            )
        );
        // no-done: the ready ACK is final and the pack follows.
        req.no_done = true;
        let (lines, due) = negotiated(&f, &req, Version::V0);
        assert_eq!(lines.last(), Some(&format!("ACK {c1}")));
        assert!(due);
        // Without a have section (a deepening client's first request): the shallow list only.
        let mut req = v2(&[f.commits[2]]);
        req.depth = Some(1);
        assert_eq!(
            negotiated(&f, &req, Version::V0),
            (
                vec![format!("shallow {}", f.commits[2]), "0000".into()],
                false
            )
        );
    }

    #[test]
    fn negotiate_refuses_what_it_cannot_answer() {
        let f = history(2);
        let unknown = ObjectId::from_hex(&[b'9'; 40]).expect("id");
        assert!(refusal(&f, &v2(&[unknown])).contains("not our ref"));
        let mut req = v2(&[]);
        req.want_refs = vec!["refs/heads/nope".into()];
        assert_eq!(refusal(&f, &req), "unknown ref refs/heads/nope");
        let mut req = v2(&[f.commits[1]]);
        req.depth = Some(1);
        req.deepen_since = Some(1);
        assert!(refusal(&f, &req).contains("cannot be used together"));
        let mut req = v2(&[f.commits[1]]);
        req.filter = Some("sparse:oid=x".into());
        assert!(refusal(&f, &req).contains("unsupported filter"));
        // No wants: nothing at all.
        let mut out = Vec::new();
        assert!(matches!(
            negotiate(&f.repo, &v2(&[]), Version::V2, &mut out),
            Ok(None)
        ));
        assert!(out.is_empty());
    }

    /// The objects in a pack (indexed as the fill indexes upstream's packs).
    fn objects_in(pack: &[u8]) -> u32 {
        crate::odb::ingest::index_in_memory(pack, 1 << 20)
            .expect("a valid pack")
            .objects
    }

    #[test]
    fn send_pack_generates_what_negotiation_decided() {
        let f = history(3);
        // A clone: every commit, tree and blob.
        let mut req = v2(&[f.commits[2]]);
        req.done = true;
        let mut out = Vec::new();
        assert!(
            serve(&f.repo, &req, Version::V2, &mut out)
                .expect("serve")
                .is_none()
        );
        let (lines, pack) = parse(&out);
        assert_eq!(lines.first().map(String::as_str), Some("packfile"));
        assert_eq!(lines.last().map(String::as_str), Some("0000"));
        assert_eq!(objects_in(&pack), 9);
        // An update from the first commit: the two newer commits with their trees and blobs.
        req.haves = vec![f.commits[0]];
        let mut out = Vec::new();
        serve(&f.repo, &req, Version::V2, &mut out).expect("serve");
        assert_eq!(objects_in(&parse(&out).1), 6);
        // Depth 1: the tip alone.
        let mut req = v2(&[f.commits[2]]);
        req.done = true;
        req.depth = Some(1);
        let mut out = Vec::new();
        serve(&f.repo, &req, Version::V2, &mut out).expect("serve");
        assert_eq!(objects_in(&parse(&out).1), 3);
    }

    #[test]
    fn send_pack_leaves_a_closed_repository_to_the_whole_pack_stream() {
        let mut f = history(2);
        f.repo.index.closed = true;
        let mut req = v2(&[f.commits[1]]);
        req.done = true;
        let mut out = Vec::new();
        let whole = serve(&f.repo, &req, Version::V2, &mut out).expect("serve");
        assert!(
            whole.is_some(),
            "every tip wanted of a closed index: sent whole"
        );
        assert_eq!(parse(&out), (vec!["packfile".into()], Vec::new()));
    }
}
