//! Work split over the machine's cores with scoped threads (parsing and reading a whole
//! commit are CPU-bound and run on every core).

use crate::diagnostic;
use crate::manifest::{self, FileContent, Limits, Manifest, SourceFile};

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
    let parts = map_parts(balanced_chunks(files, threads), |part| {
        manifest::load(part, limits)
    });
    let mut manifest = Manifest::default();
    for part in parts {
        manifest.documents.extend(part.documents);
        manifest.diagnostics.extend(part.diagnostics);
    }
    diagnostic::sort(&mut manifest.diagnostics);
    manifest
}

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
