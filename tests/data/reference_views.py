"""The per-image reference of ``bundle.data.views.BatchViews``: MONAI's own transforms, one image at a time, with
the settings of a ``BatchViews``. The tests compare the batched views with this chain in distribution."""

from __future__ import annotations

from monai.transforms import (
    Compose,
    RandAdjustContrast,
    RandAffine,
    RandFlip,
    RandGaussianNoise,
    RandGaussianSmooth,
    RandHistogramShift,
    RandScaleCrop,
    Resize,
)

from bundle.data.views import BatchViews


def monai_chain(views: BatchViews, seed: int = 0) -> Compose:
    """MONAI's per-image chain with the settings of ``views``, seeded: (1, H, W) image -> (1, S, S) view.

    The order is ``BatchViews``' own (crop, resize, flip, affine, contrast, histogram shift, blur, noise); its
    per-axis ranges are MONAI's ``[min, max]`` per axis.
    """
    size = views.image_size
    chain = Compose(
        [
            RandScaleCrop(roi_scale=views.crop_min_scale, max_roi_scale=1.0, random_size=True),
            Resize(spatial_size=(size, size), mode="bilinear"),
            RandFlip(prob=views.hflip_prob, spatial_axis=1),
            RandAffine(
                prob=views.affine_prob,
                rotate_range=(views.rotate_range,),
                scale_range=tuple(views.scale_range),
                translate_range=tuple(views.translate_range),
                padding_mode="zeros",
            ),
            RandAdjustContrast(prob=views.contrast_prob, gamma=views.gamma_range),
            RandHistogramShift(prob=views.hist_shift_prob, num_control_points=views.hist_shift_points),
            RandGaussianSmooth(prob=views.blur_prob, sigma_x=views.blur_sigma, sigma_y=views.blur_sigma),
            RandGaussianNoise(prob=views.noise_prob, std=views.noise_std),
        ]
    )
    chain.set_random_state(seed)
    return chain
