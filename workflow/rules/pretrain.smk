rule pretrain_network:
    input:
        unpack(training_inputs),
    output:
        model=pretrained_model(),
        history=pretrained_model().replace(".pt", "_history.json"),
    params:
        network=lambda wildcards: network_config(wildcards.data_type),
        training=config["training"],
        stage="pretrain",
        seed=config["seed"],
    log:
        log_file("pretrain_network", "{dataset}", "dtype-{data_type}"),
    threads: config["resources"]["training_threads"]
    resources:
        mem_mb=config["resources"]["training_mem_mb"],
        runtime=config["resources"]["training_runtime_min"],
        gpu=TRAINING_GPUS,
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/pretrain_network.py"
