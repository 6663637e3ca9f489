// The host image's repository. Tags are immutable, so a tag names one build for good and a
// rollback to it runs exactly what ran before; images are scanned as they are pushed.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";

export interface Registry {
  repository: aws.ecr.Repository;
  /** What the tasks run: the configured `image`, or `<repository>:<imageTag>`. */
  image: pulumi.Output<string>;
}

export function lifecyclePolicy(keep: number): string {
  return JSON.stringify({
    rules: [{
      rulePriority: 1,
      // Only untagged images: a tag is a release the services may run or roll back to, and
      // expiring it by count would let a burst of pushes delete the image a service runs.
      description: `Keep the last ${keep} untagged images`,
      selection: { tagStatus: "untagged", countType: "imageCountMoreThan", countNumber: keep },
      action: { type: "expire" },
    }],
  });
}

export function createRegistry(prefix: string, opts: { image?: string; imageTag?: string; keep: number }): Registry {
  const repository = new aws.ecr.Repository("host", {
    name: `${prefix}/host`,
    imageTagMutability: "IMMUTABLE",
    imageScanningConfiguration: { scanOnPush: true },
  });
  new aws.ecr.LifecyclePolicy("host", {
    repository: repository.name,
    policy: lifecyclePolicy(opts.keep),
  });
  const image = opts.image
    ? pulumi.output(opts.image)
    : pulumi.interpolate`${repository.repositoryUrl}:${opts.imageTag}`;
  return { repository, image };
}
