//! Writes the seed corpus: `fuzz/corpus/<target>/seed-<name>` for every seed of
//! `mesh_fuzz::seeds::all()`. Files the fuzzer added (other names) are left alone.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for target in mesh_fuzz::TARGETS {
        std::fs::create_dir_all(root.join(target.name))?;
    }
    let seeds = mesh_fuzz::seeds::all();
    for seed in &seeds {
        let path = root.join(seed.target).join(format!("seed-{}", seed.name));
        std::fs::write(&path, &seed.bytes)?;
    }
    println!("wrote {} seeds under {}", seeds.len(), root.display());
    Ok(())
}
