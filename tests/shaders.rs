//! Every shader in the kernel table parses and validates with naga (no GPU needed).

use wgpu_diffusion::gpu::SHADERS;

#[test]
fn every_shader_parses_and_validates() {
    assert!(SHADERS.len() >= 2);
    for s in SHADERS {
        let wgsl = s.wgsl();
        let module = naga::front::wgsl::parse_str(&wgsl)
            .unwrap_or_else(|e| panic!("shaders/{}.wgsl: {}", s.name, e.emit_to_string(&wgsl)));
        let mut v = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        );
        v.validate(&module)
            .unwrap_or_else(|e| panic!("shaders/{}.wgsl: {}", s.name, e.emit_to_string(&wgsl)));
        assert!(
            !module.entry_points.is_empty(),
            "shaders/{}.wgsl has no entry point",
            s.name
        );
    }
}

#[test]
fn every_wgsl_file_is_in_the_kernel_table() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(stem) = name.strip_suffix(".wgsl").filter(|&s| s != "prelude") {
            assert!(
                SHADERS.iter().any(|s| s.name == stem),
                "shaders/{name} is not listed in gpu::kernels::SHADERS"
            );
        }
    }
}
