//! Work split over the machine's cores with scoped threads (parsing and reading a whole
//! commit are CPU-bound and run on every core).

use crate::diagnostic;
use crate::manifest::{self, Document, FileContent, Limits, Manifest, SourceFile};
use crate::model::DesiredResource;

/// Threads to split CPU-bound work over: the available cores, at most 8.
pub(crate) fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// `work` applied to each of `parts`, each on its own thread; the results in the order of
/// `parts`. A panic in a worker is resumed on the caller's thread.
pub(crate) fn map_parts<P: Send, T: Send>(parts: Vec<P>, work: impl Fn(P) -> T + Sync) -> Vec<T> {
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| scope.spawn(move || work(part)))
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// Below this many items, splitting over threads costs more than it saves.
const MIN_ITEMS_TO_SPLIT: usize = 1_024;

/// The resources of `documents`. What else each holds (strings, references, ciphertext and
/// secret fields) is freed on every core first, in place: at 100,000 documents, freeing it on
/// one core took 160 ms of a full sync.
pub(crate) fn resources_of(mut documents: Vec<Document>) -> Vec<DesiredResource> {
    let threads = threads();
    if threads >= 2 && documents.len() >= MIN_ITEMS_TO_SPLIT {
        let per_run = documents.len().div_ceil(threads);
        let runs: Vec<&mut [Document]> = documents.chunks_mut(per_run).collect();
        map_parts(runs, |run| {
            for document in run {
                document.references = Vec::new();
                document.ciphertexts = Vec::new();
                document.secret_refs = Vec::new();
                document.strings = Vec::new();
            }
        });
    }
    documents
        .into_iter()
        .map(|document| document.resource)
        .collect()
}

/// `work` on runs of `items`, one run per core, its findings joined in the order of `items`.
pub(crate) fn flat_map_runs<'a, T: Sync, U: Send>(
    items: &'a [T],
    work: impl Fn(&'a [T]) -> Vec<U> + Sync,
) -> Vec<U> {
    let threads = threads();
    if threads < 2 || items.len() < MIN_ITEMS_TO_SPLIT {
        return work(items);
    }
    let runs: Vec<&'a [T]> = items.chunks(items.len().div_ceil(threads)).collect();
    map_parts(runs, work).into_iter().flatten().collect()
}

/// `work` applied to each of `parts` by `threads` workers, each taking the next part as it
/// finishes one; the results in the order of `parts`. Cut into more parts than workers, work
/// whose cost a cut cannot foresee still ends on every worker at about the same time.
pub(crate) fn map_queued<P: Send, T: Send>(
    parts: Vec<P>,
    threads: usize,
    work: impl Fn(P) -> T + Sync,
) -> Vec<T> {
    let workers = threads.clamp(1, parts.len().max(1));
    let queue = std::sync::Mutex::new(parts.into_iter().enumerate());
    let next = || {
        queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .next()
    };
    let done = map_parts(vec![(); workers], |()| {
        let mut done = Vec::new();
        while let Some((index, part)) = next() {
            done.push((index, work(part)));
        }
        done
    });
    let mut results: Vec<(usize, T)> = done.into_iter().flatten().collect();
    results.sort_unstable_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}

/// `manifest::load` split over the available cores (the full scan's parse, and `ritmo gitops
/// validate`'s): each file loads on its own, so chunks loaded in parallel and joined in order
/// give the same manifest.
pub(crate) fn load_manifest(files: &[SourceFile], limits: &Limits) -> Manifest {
    let threads = threads();
    let resource_files = files
        .iter()
        .filter(|file| manifest::resource_kind_for_path(&file.path).is_some())
        .count();
    // Over the file limit, one load reports it.
    if threads < 2 || files.len() < 64 || resource_files > limits.max_files {
        return manifest::load(files, limits);
    }
    // Equal shares of text do not end together: a profile of `validate` showed one core idle
    // for a fifth of the parse.
    let parts = map_queued(
        balanced_chunks(files, threads * CHUNKS_PER_THREAD),
        threads,
        |part| manifest::load(part, limits),
    );
    let mut manifest = Manifest::default();
    for part in parts {
        manifest.documents.extend(part.documents);
        manifest.diagnostics.extend(part.diagnostics);
    }
    diagnostic::sort(&mut manifest.diagnostics);
    manifest
}

/// Chunks of a parse per worker: enough for the last to end close together, few enough that
/// each still amortises its parser thread.
const CHUNKS_PER_THREAD: usize = 8;

/// `files` cut into `parts` runs of about equal parse work (bytes, plus a little per file).
/// Equal counts would not do: files sort by kind directory, and jobs are larger than the
/// rest, so the first half of a repository can hold 60 % of its text.
fn balanced_chunks(files: &[SourceFile], parts: usize) -> Vec<&[SourceFile]> {
    let weight = |file: &SourceFile| match &file.content {
        FileContent::Bytes(bytes) => bytes.len() + 256,
        _ => 256,
    };
    let total: usize = files.iter().map(weight).sum();
    let share = total.div_ceil(parts.max(1)).max(1);
    let mut chunks = Vec::with_capacity(parts);
    let (mut start, mut filled) = (0, 0);
    for (index, file) in files.iter().enumerate() {
        filled += weight(file);
        if filled >= share && chunks.len() + 1 < parts {
            chunks.push(&files[start..=index]);
            (start, filled) = (index + 1, 0);
        }
    }
    if start < files.len() {
        chunks.push(&files[start..]);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_the_order_of_the_parts() {
        let parts: Vec<u64> = (0..6).collect();

        let squares = map_parts(parts, |n| {
            std::thread::sleep(std::time::Duration::from_millis(6 - n));
            n * n
        });

        assert_eq!(squares, [0, 1, 4, 9, 16, 25]);
    }

    #[test]
    fn runs_split_over_the_cores_give_their_findings_in_order() {
        let items: Vec<u64> = (0..5_003).collect();

        let odd = flat_map_runs(&items, |run| {
            run.iter().copied().filter(|n| n % 2 == 1).collect()
        });

        assert_eq!(
            odd,
            items
                .iter()
                .copied()
                .filter(|n| n % 2 == 1)
                .collect::<Vec<_>>()
        );
        assert_eq!(flat_map_runs(&[3_u8], |run| run.to_vec()), [3]);
        assert!(flat_map_runs(&[] as &[u8], |run| run.to_vec()).is_empty());
    }

    #[test]
    fn queued_parts_come_back_in_order_whichever_worker_took_them() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::time::{Duration, Instant};

        let parts: Vec<u64> = (0..9).collect();
        let others_done = AtomicUsize::new(0);

        // The first part waits for the other eight: only a worker left free to take them all
        // lets it end before its deadline.
        let squares = map_queued(parts, 2, |n| {
            if n == 0 {
                let deadline = Instant::now() + Duration::from_secs(10);
                while others_done.load(Ordering::SeqCst) < 8 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
            } else {
                others_done.fetch_add(1, Ordering::SeqCst);
            }
            (n * n, std::thread::current().id())
        });

        let values: Vec<u64> = squares.iter().map(|(value, _)| *value).collect();
        assert_eq!(values, [0, 1, 4, 9, 16, 25, 36, 49, 64]);
        assert!(
            squares[1..]
                .iter()
                .all(|(_, thread)| *thread != squares[0].1)
        );
        assert!(map_queued(Vec::<u64>::new(), 2, |n| n).is_empty());
    }

    #[test]
    fn the_resources_of_many_documents_come_out_whole_and_in_order() {
        let files: Vec<SourceFile> = (0..1_500)
            .map(|i| job_file(&format!("jobs/j{i:04}.yaml"), &[&format!("job-{i}")]))
            .collect();
        let documents = manifest::load(&files, &Limits::default()).documents;
        let expected: Vec<DesiredResource> = documents.iter().map(|d| d.resource.clone()).collect();

        assert_eq!(resources_of(documents), expected);
    }

    #[test]
    fn loading_on_every_core_gives_the_manifest_of_one_load() {
        let mut files: Vec<SourceFile> = (0..150)
            .map(|i| job_file(&format!("jobs/j{i:03}.yaml"), &[&format!("job-{i}")]))
            .collect();
        files[7].content = FileContent::Bytes(b"kind: [unclosed\n".to_vec());
        files[120] = job_file("jobs/j120.yaml", &["job-3"]);

        let parallel = load_manifest(&files, &Limits::default());

        assert_eq!(parallel, manifest::load(&files, &Limits::default()));
        assert_eq!(parallel.documents.len(), 149);
    }

    #[test]
    fn chunks_share_the_text_evenly_and_keep_every_file_in_order() {
        let mut files: Vec<SourceFile> = (0..90)
            .map(|i| job_file(&format!("jobs/j{i:03}.yaml"), &[&format!("job-{i}")]))
            .collect();
        for file in &mut files[..30] {
            file.content = FileContent::Bytes(vec![b'#'; 4_000]);
        }

        let chunks = balanced_chunks(&files, 2);

        assert_eq!(chunks.len(), 2);
        assert!(chunks[0].len() < 30, "{}", chunks[0].len());
        let rejoined: Vec<&str> = chunks
            .iter()
            .flat_map(|c| c.iter())
            .map(|f| f.path.as_str())
            .collect();
        let all: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(rejoined, all);
        assert_eq!(balanced_chunks(&files[..1], 4).concat().len(), 1);
    }

    fn job_file(path: &str, names: &[&str]) -> SourceFile {
        let docs: Vec<String> = names
            .iter()
            .map(|name| {
                format!("apiVersion: ritmo.dev/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n  timeout: 5\n")
            })
            .collect();
        SourceFile {
            path: path.into(),
            content: FileContent::Bytes(docs.join("---\n").into_bytes()),
        }
    }
}
