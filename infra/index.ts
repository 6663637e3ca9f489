// The Pulumi program: the platform on AWS (README.md beside this file says how to deploy it).
import { loadSettings } from "./src/config";
import { createPlatform } from "./src/platform";

const platform = createPlatform(loadSettings());

export const gatewayUrl = platform.gatewayUrl;
export const docsUrls = platform.docsUrls;
export const rabbitmqConsoleUrl = platform.rabbitmqConsoleUrl;
export const imageRepositoryUrl = platform.imageRepositoryUrl;
export const image = platform.image;
export const dbSetupCommand = platform.dbSetupCommand;
export const brokerSetupCommand = platform.brokerSetupCommand;
export const clusterName = platform.clusterName;
export const databaseAddress = platform.databaseAddress;
export const serviceHostnames = platform.serviceHostnames;
