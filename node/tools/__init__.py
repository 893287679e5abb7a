"""What a running node never imports: the actor build, the benchmarks, the demo."""
