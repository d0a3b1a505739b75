"""Evaluation episodes recorded as MP4 files (Gymnasium's ``RecordVideo``, which uses moviepy)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from gymnasium.error import DependencyNotInstalled

from .envs import NonFiniteError, check_spaces, clip_actions, make

__all__ = ["record_video"]

_INSTALL = "pip install 'rlgrad[video]'"


def record_video(
    agent: Any,
    env_id: str,
    video_dir: str,
    episodes: int = 1,
    seed: int | None = None,
    *,
    allow_import: bool = True,
) -> np.ndarray:
    """Run ``episodes`` deterministic episodes of ``agent`` and save each as an MP4 file.

    Args:
        agent: anything with ``act(obs (1, obs_dim), deterministic=True) -> (1, ...)`` actions.
        env_id: the environment, as for :func:`rlgrad.envs.make`.
        video_dir: directory of the files (``eval-episode-{i}.mp4``).
        episodes: number of episodes, one file each.
        seed: episode ``i`` is reset with ``seed + i``; None: unseeded.
        allow_import: as for :func:`rlgrad.envs.make` (False for an id read from a checkpoint).

    Returns:
        ``(episodes,)`` undiscounted returns.

    Raises:
        ValueError: bad arguments, an unusable environment, or moviepy or the environment's
            renderer not installed (naming ``rlgrad[video]``).
    """
    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    try:
        import moviepy  # noqa: F401
    except ImportError:
        raise ValueError(f"recording video needs moviepy: {_INSTALL}") from None
    from gymnasium.wrappers import RecordVideo

    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # render off screen, quietly
    env = make(env_id, render_mode="rgb_array", allow_import=allow_import)
    returns = np.zeros(episodes)
    # Gymnasium raises DependencyNotInstalled where it first needs a package: moviepy when the
    # recorder is built or writes a file, the renderer (pygame for classic control) at the
    # first render, inside reset
    try:
        try:
            env = RecordVideo(env, video_folder=str(video_dir), episode_trigger=lambda _: True,
                              name_prefix="eval", disable_logger=True)
            spec = check_spaces(env.observation_space, env.action_space)
            for i in range(episodes):
                obs, _ = env.reset(seed=None if seed is None else seed + i)
                done = False
                while not done:
                    action = agent.act(np.asarray(obs)[None], deterministic=True)[0]
                    if not spec.discrete:
                        if not np.isfinite(action).all():
                            raise NonFiniteError(
                                f"the policy produced the non-finite action {action.tolist()} "
                                f"in episode {i} (not sent to the environment)"
                            )
                        action = clip_actions(action, env.action_space)
                    obs, reward, terminated, truncated, _ = env.step(action)
                    returns[i] += float(reward)
                    done = terminated or truncated
        finally:
            env.close()
    except DependencyNotInstalled as e:
        raise ValueError(
            f"recording video of {env_id!r} needs a package that is not installed: {_INSTALL} "
            f"(Gymnasium: {' '.join(str(e).split())})"
        ) from None
    return returns
