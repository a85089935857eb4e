# Real data: verified downloads into a cache, then each unit's repetitions become the same
# inputs the simulation writes (repetitions, reference, mask; gradient tables and reference
# tensor maps for diffusion). The reference is what the data offer, never a ground truth.


localrules:
    download_file,


rule download_file:
    output:
        file=cached_file(),
        record=cached_file(".json"),
    wildcard_constraints:
        source="openneuro|hcp",
        identifier="ds[0-9]{6}|HCP_1200",
        path=".+",
    params:
        download=download_params,
    log:
        log_file("download_file", "{source}", "{identifier}", "{path}"),
    threads: 1
    resources:
        mem_mb=500,
        runtime=60,
    conda:
        "../../envs/ingest.yaml"
    script:
        "../scripts/download_file.py"


rule ingest_anat:
    input:
        unpack(ingest_inputs),
    output:
        reference=subject_file("reference"),
        mask=subject_file("mask"),
        noisy=subject_file("noisy"),
        sidecar=subject_file("noisy", ext=".json"),
    wildcard_constraints:
        dataset=one_of(REAL),
        data_type=one_of(T1W_TYPES),
    params:
        settings=ingest_settings,
        seed=config["seed"],
    log:
        log_file("ingest_anat", "{dataset}", "sub-{subject}", "dtype-{data_type}"),
    threads: 1
    resources:
        mem_mb=config["resources"]["simulation_mem_mb"],
        runtime=config["resources"]["simulation_runtime_min"],
    conda:
        "../../envs/ingest.yaml"
    script:
        "../scripts/ingest_bids.py"


rule ingest_dwi:
    input:
        unpack(ingest_inputs),
    output:
        reference=subject_file("reference"),
        mask=subject_file("mask"),
        noisy=subject_file("noisy"),
        sidecar=subject_file("noisy", ext=".json"),
        bval=gradient_file(".bval"),
        bvec=gradient_file(".bvec"),
        maps=[reference_map(name) for name in DTI_MAPS],
    wildcard_constraints:
        dataset=one_of(REAL),
        data_type=one_of(DWI_TYPES),
    params:
        settings=ingest_settings,
        map_names=DTI_MAPS,
        seed=config["seed"],
    log:
        log_file("ingest_dwi", "{dataset}", "sub-{subject}", "dtype-{data_type}"),
    threads: 1
    resources:
        mem_mb=config["resources"]["simulation_mem_mb"],
        runtime=config["resources"]["simulation_runtime_min"],
    conda:
        "../../envs/ingest.yaml"
    script:
        "../scripts/ingest_bids.py"
