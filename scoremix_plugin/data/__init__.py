"""Training data below both trainers: the ScoreMix dataset (real folder + synthetic shards), the
training DataLoader recipe (sharded, seeded, fixed batch) and augmentation.

    from scoremix_plugin.data.scoremix_dataset import ScoreMixDataset, check_source
    from scoremix_plugin.data.loader import build_train_dataset, make_train_loader, EpochSampler, seed_worker
    from scoremix_plugin.data.augment import AUGMENTATIONS, build_augmentation, DegradeResize
"""
