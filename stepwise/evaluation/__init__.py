"""Evaluation: feature networks, streaming statistics, Fréchet distance / KID / FID_inf,
reference-statistics files and reports. Takes arrays; imports only ``stepwise.io``."""
from stepwise.evaluation.device import FrechetReference, frechet_reference, frechet_to_reference, gaussian_fit
from stepwise.evaluation.features import (DOMAIN_SIZES, DomainCNN, FeatureExtractor, TrainedFeatureNet,
                                 classifier_accuracy, extract_features, feature_net_extractor,
                                 feature_stats, identity_extractor, identity_features,
                                 inception_extractor, load_feature_net, save_feature_net,
                                 stream_features, train_feature_net)
from stepwise.evaluation.inception import (FID_INPUT_SIZE, INCEPTION_FEATURE_DIM, InceptionV3FID,
                                  convert_inception, inception_apply, inception_apply_fn,
                                  inception_params_from_state_dict, init_inception,
                                  load_inception, resize_bilinear)
from stepwise.evaluation.report import (format_table_html, format_table_markdown, grid_png, html_report,
                               markdown_report, pareto_front, plot_distance_vs_nfe, plot_lines,
                               plot_pareto, sample_grid)
from stepwise.evaluation.statfiles import (STAT_FORMATS, load_adm_reference, load_stats, save_stats,
                                  stats_file_info)
from stepwise.evaluation.stats import (FrechetDistanceError, GaussianStats, Metric, MomentState,
                              fid_bootstrap, fid_from_stats, fid_infinity, frechet_distance,
                              frechet_between, frechet_to_moments, gaussian_stats, kid, moments_finalize,
                              moments_init, moments_merge, moments_update, polynomial_mmd2,
                              sample_frechet, stats_from_batches, frechet_rows, frechet_rows_to,
                              covariance_root, inverse_n_fit)

__all__ = ["FrechetReference", "frechet_reference", "frechet_to_reference", "gaussian_fit", 
    # features
    "FeatureExtractor", "DomainCNN", "TrainedFeatureNet", "train_feature_net",
    "save_feature_net", "load_feature_net", "feature_net_extractor", "identity_extractor",
    "identity_features", "inception_extractor", "stream_features", "extract_features",
    "feature_stats", "classifier_accuracy", "DOMAIN_SIZES",
    # inception
    "InceptionV3FID", "init_inception", "load_inception", "convert_inception",
    "inception_params_from_state_dict", "inception_apply", "inception_apply_fn",
    "resize_bilinear", "FID_INPUT_SIZE", "INCEPTION_FEATURE_DIM",
    # stats
    "GaussianStats", "Metric", "MomentState", "moments_init", "moments_merge", "moments_update",
    "moments_finalize", "gaussian_stats", "stats_from_batches", "frechet_distance",
    "fid_from_stats", "frechet_to_moments", "kid", "polynomial_mmd2", "fid_infinity",
    "fid_bootstrap", "FrechetDistanceError", "sample_frechet", "frechet_between",
    "frechet_rows", "frechet_rows_to", "covariance_root", "inverse_n_fit",
    # files
    "STAT_FORMATS", "save_stats", "load_stats", "load_adm_reference", "stats_file_info",
    # reports
    "format_table_markdown", "format_table_html", "sample_grid", "grid_png", "plot_lines",
    "plot_distance_vs_nfe", "plot_pareto", "pareto_front", "markdown_report", "html_report",
]
